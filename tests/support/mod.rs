#![allow(dead_code)]
pub mod audio;
pub mod gateway;
pub mod sipp;
pub mod tethr;
