#![allow(dead_code)]
pub mod tethr;
