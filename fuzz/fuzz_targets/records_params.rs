#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| usage_api_fuzz::records_params(data));
