//! Conversations, independent of any model: the rules of a turn that every front end goes
//! through (`conversation`), the HuatuoGPT-Vision prompt template (`template`) and saved
//! sessions (`session`).

pub mod conversation;
pub mod images;
pub mod session;
pub mod template;
