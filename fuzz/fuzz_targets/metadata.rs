#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| siprec_gateway_fuzz::metadata(data));
