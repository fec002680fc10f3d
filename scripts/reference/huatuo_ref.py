"""Python reference for huatuo's parity fixtures.

This is our own re-statement of what the official HuatuoGPT-Vision implementation does
(../shared/docs/huatuo-reference.md, which cites cli.py and llava/ line by line), built from
stock transformers classes: CLIPVisionModel, CLIPImageProcessor (slow, PIL-based),
Qwen2ForCausalLM / LlamaForCausalLM, AutoTokenizer. It is used only to *compute* fixtures that
the Rust tests compare against; CI never runs it.

Requirements: scripts/reference/requirements.txt (torch, transformers 4.46, pillow, safetensors).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import torch
from PIL import Image

IMAGE_TOKEN_INDEX = -200  # llava/constants.py
VIT_SUBDIR = os.path.join("vit", "clip_vit_large_patch14_336")


# ---------------------------------------------------------------------------------------------
# Text: reference §3 (cli.py input_moderation, insert_image_placeholder, preprocess_huatuo,
# tokenizer_image_token).
# ---------------------------------------------------------------------------------------------

def sanitize(text: str) -> str:
    """Remove every `<image>`, `<s>` and `</s>` from user text (reference §3.1)."""
    for banned in ("<image>", "<s>", "</s>"):
        text = text.replace(banned, "")
    return text


def with_placeholders(text: str, n_images: int) -> str:
    """Prepend one `<image>\\n` per image of this turn (reference §3.1)."""
    for _ in range(n_images):
        text = "<image>\n" + text
    return text


def tokenize_with_images(tokenizer, prompt: str) -> list[int]:
    """Split on `<image>`, tokenize each chunk alone (no special tokens), join with -200."""
    chunks = [tokenizer(c, add_special_tokens=False).input_ids for c in prompt.split("<image>")]
    ids: list[int] = []
    offset = 0
    if chunks and chunks[0] and chunks[0][0] == tokenizer.bos_token_id:
        offset = 1
        ids.append(chunks[0][0])
    # cli.py interleaves the chunks with separators of `offset + 1` sentinels, then drops the
    # first `offset` ids of every piece, separators included: one sentinel per image.
    for i, chunk in enumerate(chunks):
        if i > 0:
            ids.extend(([IMAGE_TOKEN_INDEX] * (offset + 1))[offset:])
        ids.extend(chunk[offset:])
    return ids


def prompt_ids(tokenizer, history: list[tuple[str, str]], user: str) -> list[int]:
    """Token ids of a whole conversation, each segment tokenized on its own (reference §3.2).

    `history` holds (human text with placeholders, answer unstripped) pairs; `user` is the
    current human text with its placeholders.
    """
    ids: list[int] = []
    for human, answer in history:
        ids += tokenize_with_images(tokenizer, f"<|user|>\n{human.strip()}\n")
        ids += tokenizer(f"<|assistant|>\n{answer} \n", add_special_tokens=False,
                         truncation=True).input_ids
    ids += tokenize_with_images(tokenizer, f"<|user|>\n{user.strip()}\n<|assistant|>\n")
    return ids


# ---------------------------------------------------------------------------------------------
# Images: reference §2 (cli.py get_image_tensors).
# ---------------------------------------------------------------------------------------------

def load_processor(model_dir: str):
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor.from_pretrained(os.path.join(model_dir, VIT_SUBDIR))


def expand2square(img: Image.Image, background) -> Image.Image:
    w, h = img.size
    if w == h:
        return img
    if w > h:
        out = Image.new(img.mode, (w, w), background)
        out.paste(img, (0, (w - h) // 2))
        return out
    out = Image.new(img.mode, (h, h), background)
    out.paste(img, ((h - w) // 2, 0))
    return out


def pixel_values(processor, path: str) -> torch.Tensor:
    """[3, 336, 336] float32 after expand2square, bicubic resize and CLIP normalisation."""
    img = Image.open(path).convert("RGB")
    img = expand2square(img, tuple(int(x * 255) for x in processor.image_mean))
    return processor.preprocess(img, return_tensors="pt")["pixel_values"][0]


# ---------------------------------------------------------------------------------------------
# Model: reference §1, §5 (llava_arch.py splice, clip_encoder.py, projector builder).
# ---------------------------------------------------------------------------------------------

@dataclass
class Reference:
    model_dir: str
    dtype: torch.dtype = torch.float32
    config: dict = field(init=False)

    def __post_init__(self):
        from safetensors.torch import load_file
        from transformers import (AutoTokenizer, CLIPVisionConfig, CLIPVisionModel,
                                  LlamaConfig, LlamaForCausalLM, Qwen2Config,
                                  Qwen2ForCausalLM)

        with open(os.path.join(self.model_dir, "config.json")) as f:
            self.config = json.load(f)
        cfg = dict(self.config)
        family = cfg["model_type"]
        if family == "llava_qwen2":
            cfg["model_type"] = "qwen2"
            lm_cls, lm_cfg = Qwen2ForCausalLM, Qwen2Config(**cfg)
        elif family == "llava_llama":
            cfg["model_type"] = "llama"
            lm_cls, lm_cfg = LlamaForCausalLM, LlamaConfig(**cfg)
        else:
            raise ValueError(f"unknown model_type {family}")
        lm_cfg._attn_implementation = "eager"

        # Every tensor of every shard, by name (bf16 on disk -> self.dtype).
        with open(os.path.join(self.model_dir, "model.safetensors.index.json")) as f:
            index = json.load(f)
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(index["weight_map"].values())):
            state.update(load_file(os.path.join(self.model_dir, shard)))
        state = {k: v.to(self.dtype) for k, v in state.items()}

        self.lm = lm_cls(lm_cfg).to(self.dtype).eval()
        lm_state = {k: v for k, v in state.items()
                    if not k.startswith(("model.vision_tower.", "model.mm_projector."))}
        missing, unexpected = self.lm.load_state_dict(lm_state, strict=False)
        missing = [k for k in missing if "rotary_emb" not in k]
        assert not missing and not unexpected, (missing, unexpected)

        vit_cfg = CLIPVisionConfig.from_pretrained(os.path.join(self.model_dir, VIT_SUBDIR))
        vit_cfg._attn_implementation = "eager"
        self.vision = CLIPVisionModel(vit_cfg).to(self.dtype).eval()
        prefix = "model.vision_tower.vision_tower."
        vis_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        missing, unexpected = self.vision.load_state_dict(vis_state, strict=False)
        missing = [k for k in missing if "position_ids" not in k]
        assert not missing and not unexpected, (missing, unexpected)

        hidden = self.config["hidden_size"]
        mm_hidden = self.config["mm_hidden_size"]
        self.projector = torch.nn.Sequential(
            torch.nn.Linear(mm_hidden, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, hidden)
        ).to(self.dtype).eval()
        self.projector.load_state_dict({
            "0.weight": state["model.mm_projector.0.weight"],
            "0.bias": state["model.mm_projector.0.bias"],
            "2.weight": state["model.mm_projector.2.weight"],
            "2.bias": state["model.mm_projector.2.bias"],
        })
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.processor = load_processor(self.model_dir)

    @torch.inference_mode()
    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """[N, 576, hidden]: CLIP hidden_states[select_layer] without CLS, then the projector."""
        out = self.vision(pixels.to(self.dtype), output_hidden_states=True)
        feats = out.hidden_states[self.config.get("mm_vision_select_layer", -2)][:, 1:]
        return self.projector(feats)

    @torch.inference_mode()
    def embeds(self, ids: list[int], images: list[str]) -> torch.Tensor:
        """[1, L, hidden]: text embeddings with the j-th -200 replaced by image j's features."""
        feats = None
        if images:
            pixels = torch.stack([pixel_values(self.processor, p) for p in images])
            feats = self.image_features(pixels)
        embed = self.lm.get_input_embeddings()
        parts, text, j = [], [], 0
        for t in ids:
            if t == IMAGE_TOKEN_INDEX:
                if text:
                    parts.append(embed(torch.tensor(text)))
                    text = []
                parts.append(feats[j])
                j += 1
            else:
                text.append(t)
        if text:
            parts.append(embed(torch.tensor(text)))
        assert feats is None or j == feats.shape[0], "images and placeholders differ"
        return torch.cat(parts, 0).unsqueeze(0)

    @torch.inference_mode()
    def logits(self, ids: list[int], images: list[str]) -> torch.Tensor:
        """[L, vocab] float32 logits at every prompt position."""
        return self.lm(inputs_embeds=self.embeds(ids, images)).logits[0].float()

    @torch.inference_mode()
    def generate(self, ids: list[int], images: list[str], max_new_tokens: int,
                 repetition_penalty: float = 1.2) -> list[int]:
        """Greedy generation with the reference CLI's processors (rep. penalty over generated
        tokens only, min_new_tokens 1, stop at the tokenizer's EOS); new ids only, EOS kept."""
        eos = self.tokenizer.eos_token_id
        out = self.lm.generate(
            inputs_embeds=self.embeds(ids, images),
            attention_mask=None,
            do_sample=False,
            num_beams=1,
            max_new_tokens=max_new_tokens,
            min_new_tokens=1,
            repetition_penalty=repetition_penalty,
            eos_token_id=eos,
            pad_token_id=eos,
            use_cache=True,
        )
        return out[0].tolist()

    def answer(self, new_ids: list[int]) -> str:
        """What cli.py's inference() returns: decoded without special tokens, stripped."""
        return self.tokenizer.decode(new_ids, skip_special_tokens=True).strip()
