//! /proc/cmdline against an independent transcription of the kernel's rules
//! (lib/cmdline.c `next_arg`, kernel/params.c `parse_args`, lib/ctype.c `isspace`),
//! written the way the C runs: one NUL-terminated buffer that the parser cuts by
//! writing NULs into it.
#![no_main]

use std::path::Path;

use cchost::inventory::cmdline::Cmdline;
use libfuzzer_sys::fuzz_target;

fn isspace(c: u8) -> bool {
    matches!(c, 9..=13 | 32 | 160)
}

fn skip_spaces(buf: &[u8], mut i: usize) -> usize {
    while isspace(buf[i]) {
        i += 1;
    }
    i
}

fn c_str(buf: &[u8], at: usize) -> &[u8] {
    let end = buf[at..].iter().position(|&b| b == 0).unwrap() + at;
    &buf[at..end]
}

/// Returns (param offset, value offset, next offset), cutting `buf` as the C does.
fn next_arg(buf: &mut [u8], mut args: usize) -> (usize, Option<usize>, usize) {
    let (mut in_quote, mut quoted) = (false, false);
    if buf[args] == b'"' {
        args += 1;
        in_quote = true;
        quoted = true;
    }
    let mut i = 0;
    let mut equals = 0;
    while buf[args + i] != 0 {
        if isspace(buf[args + i]) && !in_quote {
            break;
        }
        if equals == 0 && buf[args + i] == b'=' {
            equals = i;
        }
        if buf[args + i] == b'"' {
            in_quote = !in_quote;
        }
        i += 1;
    }
    let param = args;
    let val = if equals == 0 {
        None
    } else {
        buf[args + equals] = 0;
        let mut v = args + equals + 1;
        if buf[v] == b'"' {
            v += 1;
            if buf[args + i - 1] == b'"' {
                buf[args + i - 1] = 0;
            }
        }
        Some(v)
    };
    if quoted && i > 0 && buf[args + i - 1] == b'"' {
        buf[args + i - 1] = 0;
    }
    let next = if buf[args + i] != 0 {
        buf[args + i] = 0;
        args + i + 1
    } else {
        args + i
    };
    (param, val, skip_spaces(buf, next))
}

type Params = Vec<(String, Option<String>)>;

fn kernel(line: &[u8]) -> (Params, Vec<String>) {
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut buf = line.to_vec();
    buf.push(0);
    let mut params = Vec::new();
    let mut init = Vec::new();
    let mut a = skip_spaces(&buf, 0);
    let mut after_dashes = false;
    while buf[a] != 0 {
        let (p, v, n) = next_arg(&mut buf, a);
        a = n;
        let name = lossy(c_str(&buf, p));
        let value = v.map(|v| lossy(c_str(&buf, v)));
        if after_dashes {
            // init/main.c set_init_arg: repair_env_string puts the `=` back.
            init.push(match value {
                Some(v) => format!("{name}={v}"),
                None => name,
            });
        } else if value.is_none() && c_str(&buf, p) == b"--" {
            after_dashes = true;
        } else {
            params.push((name, value));
        }
    }
    (params, init)
}

fuzz_target!(|data: &[u8]| {
    let parsed = Cmdline::parse_bytes(Path::new("/proc/cmdline"), data);
    if data.contains(&0) || data.len() > 64 * 1024 {
        assert!(parsed.is_err());
        return;
    }
    let c = parsed.expect("a NUL-free line under 64 KiB parses");
    let line = data.strip_suffix(b"\n").unwrap_or(data);
    let (params, init) = kernel(line);
    let ours: Params = c
        .params
        .iter()
        .map(|p| (p.name.clone(), p.value.clone()))
        .collect();
    assert_eq!(
        ours,
        params,
        "parameters of {:?}",
        String::from_utf8_lossy(data)
    );
    assert_eq!(
        c.init_args,
        init,
        "init args of {:?}",
        String::from_utf8_lossy(data)
    );
});
