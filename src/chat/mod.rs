//! Conversation text and saved conversations, independent of any model: the
//! HuatuoGPT-Vision prompt template and session files.

pub mod session;
pub mod template;
