#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| odt_fuzz::bom::run(data));
