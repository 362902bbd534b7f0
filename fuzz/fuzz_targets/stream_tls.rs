#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wakuprof_fuzz::run("stream_tls", data);
});
