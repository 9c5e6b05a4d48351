#![allow(dead_code)]
pub mod audio;
pub mod gateway;
pub mod sip_client;
pub mod sipp;
pub mod tethr;
