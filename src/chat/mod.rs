//! Conversation text, independent of any model: the HuatuoGPT-Vision prompt template.

pub mod template;
