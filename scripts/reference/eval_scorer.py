"""The authors' scorer (FreedomIntelligence/HuatuoGPT-Vision scorer.py, commit f699d88,
Apache-2.0): `match_choice3` and `score_mix_llava` / `test_choice_llava`, kept as they are
except for what cannot run: wandb is not imported, and match_choice3's fallbacks, which crash
on every eval.py item (they call `.lower()` on the item's list fields, and the crash ends the
run in `assert False`), are replaced by "no letter", which scores the item wrong.
"""

import re
import ast

OPT_TITLE = ['A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K']


def match_choice3(text):
    matches = list(re.finditer(r"(is |是|\*|\W|\ |\(|为|^|'|\"|#)(?![aA] )([abcdefghijklmnABCDEFGHIJKLMN])(\W|$)", text, re.S))
    if matches:
        ans = matches[0].group(2)
        return ans
    return None


def score_mix_llava(datas):
    """Returns (res, scored items): res as test_choice_llava computes it (fractions), each
    scored item with its `pred` and `is_correct`."""
    filted_data = []
    test_id_set = set()
    for da in datas:
        if 'question_type' in da and da['question_type'] == 'open':
            continue
        if da['test_id'] in test_id_set:
            continue
        if isinstance(da['options'], str):
            da['options'] = ast.literal_eval(da['options'])
        if len(da['options']) == 0:
            continue
        test_id_set.add(da['test_id'])
        filted_data.append(da)

    type2score, sub_type2score, res = {}, {}, {}
    for da in filted_data:
        ty = da['dataset']
        type2score.setdefault(ty, [0, 0])
        type2score[ty][1] += 1
        da['pred'] = match_choice3(da['model_output'])
        if da['answer'] == '?':
            da['gold'] = None
            da['is_correct'] = False
        else:
            da['gold'] = OPT_TITLE[da['options'].index(da['answer'])]
            da['is_correct'] = da['pred'] is not None and da['pred'] == da['gold']
        if da['is_correct']:
            type2score[ty][0] += 1
        if 'subset' in da and da['subset'] != '':
            key = f'{ty}_{da["subset"]}'
            sub_type2score.setdefault(key, [0, 0])
            sub_type2score[key][1] += 1
            if da['is_correct']:
                sub_type2score[key][0] += 1
    for k, v in type2score.items():
        res[k] = {'correct': v[0], 'total': v[1]}
    res['total'] = {'correct': sum(v[0] for v in type2score.values()), 'total': len(filted_data)}
    for k, v in sub_type2score.items():
        res['subset:' + k] = {'correct': v[0], 'total': v[1]}
    return res, filted_data
