//! The old-kubelet `:authority` rewrite: the client's HTTP/2 bytes, cut into pieces as
//! the socket may deliver them. The output has the input's length (the rewrite moves
//! nothing), does not depend on the cuts, and a header block rewritten in one piece
//! keeps its length too. Input: 8 piece sizes, then the stream.
#![no_main]

use cchost::deviceplugin::authority::rewrite_authority;
use cchost::fuzzing::hpack_stream;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (cuts, stream) = data.split_at(data.len().min(8));
    let whole = hpack_stream(stream, &[]);
    assert_eq!(whole.len(), stream.len());
    assert_eq!(hpack_stream(stream, cuts), whole, "cut at {cuts:?}");
    let mut block = stream.to_vec();
    rewrite_authority(&mut block);
    assert_eq!(block.len(), stream.len());
});
