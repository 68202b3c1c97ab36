"""controller.relay.audio: µ-law, stereo → caller, resampling across chunks, framing."""

import math
import struct

import pytest

from controller.relay.audio import (
    ULAW_20MS,
    ULAW_SILENCE,
    CallerToUlaw,
    Framer,
    Resampler,
    mono,
    pcm_from_ulaw,
    ulaw_from_pcm,
)


def pcm(samples):
    return struct.pack(f"<{len(samples)}h", *samples)


def samples(data):
    return list(struct.unpack(f"<{len(data) // 2}h", data))


def sine(freq, rate, seconds, amplitude=12000):
    return [round(amplitude * math.sin(2 * math.pi * freq * i / rate)) for i in range(int(rate * seconds))]


def correlation(a, b):
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    ma, mb = sum(a) / n, sum(b) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    va = sum((x - ma) ** 2 for x in a)
    vb = sum((y - mb) ** 2 for y in b)
    return cov / math.sqrt(va * vb)


def frequency(xs, rate):
    # Rising zero crossings per second, between the first and the last one: robust for a clean tone.
    ups = [i for i in range(1, len(xs)) if xs[i - 1] < 0 <= xs[i]]
    return (len(ups) - 1) * rate / (ups[-1] - ups[0])


def g711_ulaw_decode(code):
    # ITU-T G.711 µ-law expansion as in the reference decoder (Sun's g711.c), 16-bit output.
    u = ~code & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 7)
    return 0x84 - t if u & 0x80 else t - 0x84


def test_ulaw_decoding_is_g711_for_every_code():
    assert samples(pcm_from_ulaw(bytes(range(256)))) == [g711_ulaw_decode(c) for c in range(256)]


def test_ulaw_known_values():
    assert ulaw_from_pcm(pcm([0, 32767, -32768, 32124, -32124])) == bytes([0xFF, 0x80, 0x00, 0x80, 0x00])
    assert samples(pcm_from_ulaw(bytes([0xFF, 0x7F, 0x80, 0x00]))) == [0, 0, 32124, -32124]
    assert ULAW_SILENCE == ulaw_from_pcm(pcm([0]))[0]


def test_ulaw_encoding_inverts_decoding():
    # Every code's value encodes back to the same code, except 0x7F ("-0"), which is 0 and encodes as 0xFF.
    codes = bytes(c for c in range(256) if c != 0x7F)
    assert ulaw_from_pcm(pcm_from_ulaw(codes)) == codes


def test_ulaw_round_trip_keeps_a_sine():
    tone = sine(440, 8000, 1.0)
    back = samples(pcm_from_ulaw(ulaw_from_pcm(pcm(tone))))
    assert len(back) == len(tone)
    assert correlation(tone, back) >= 0.999


def test_ulaw_is_one_byte_per_sample():
    assert len(ulaw_from_pcm(bytes(320))) == ULAW_20MS
    assert len(pcm_from_ulaw(bytes(160))) == 320


def test_ulaw_refuses_half_a_sample():
    with pytest.raises(ValueError, match="not a whole number of 2-byte sample frames"):
        ulaw_from_pcm(b"\x00\x01\x02")


def test_mono_passes_mono_and_takes_left_of_stereo():
    assert mono(pcm([1, 2, 3]), 1) == pcm([1, 2, 3])
    left = [1, -2, 32767, -32768, 0]
    right = [100, 200, 300, 400, 500]
    stereo = pcm([v for pair in zip(left, right) for v in pair])
    assert mono(stereo, 2) == pcm(left)
    assert mono(b"", 2) == b""


def test_mono_refuses_what_the_module_never_sends():
    with pytest.raises(ValueError, match="3 channels"):
        mono(bytes(12), 3)
    with pytest.raises(ValueError, match="6 bytes is not a whole number of 4-byte sample frames"):
        mono(bytes(6), 2)


@pytest.mark.parametrize("from_rate,to_rate", [(16000, 8000), (8000, 16000), (48000, 8000), (8000, 24000)])
def test_resampling_keeps_a_tones_frequency_and_length(from_rate, to_rate):
    tone = sine(440, from_rate, 1.0)
    out = samples(Resampler(from_rate, to_rate).convert(pcm(tone)))
    # One second stays one second; upsampling stops at the last input sample (the rest would come with
    # the next chunk), so it is short by less than one input sample.
    assert to_rate - max(1, to_rate // from_rate) <= len(out) <= to_rate
    assert frequency(out, to_rate) == pytest.approx(440, abs=1)
    assert correlation(sine(440, to_rate, 1.0), out) > 0.999  # in place: no delay


@pytest.mark.parametrize("from_rate,to_rate,chunk_ms", [(16000, 8000, 20), (8000, 16000, 20), (48000, 8000, 20),
                                                         (16000, 8000, 7)])
def test_chunked_resampling_equals_one_shot(from_rate, to_rate, chunk_ms):
    # The filter state goes from chunk to chunk, so 20 ms chunks join without a click or a lost sample.
    whole = pcm(sine(440, from_rate, 0.5))
    one_shot = Resampler(from_rate, to_rate).convert(whole)
    step = from_rate * chunk_ms // 1000 * 2
    r = Resampler(from_rate, to_rate)
    chunked = b"".join(r.convert(whole[i:i + step]) for i in range(0, len(whole), step))
    assert chunked == one_shot


def test_resampling_without_state_clicks_at_chunk_edges():
    # What the kept state buys: converting each chunk afresh restarts the interpolation at every edge.
    whole = pcm(sine(440, 8000, 0.5))
    fresh = b"".join(Resampler(8000, 16000).convert(whole[i:i + 320]) for i in range(0, len(whole), 320))
    assert fresh != Resampler(8000, 16000).convert(whole)


def test_resampler_same_rate_passes_through_and_refuses_bad_rates():
    assert Resampler(8000, 8000).convert(pcm([1, 2])) == pcm([1, 2])
    with pytest.raises(ValueError, match="from_rate 0 is not a positive whole number of Hz"):
        Resampler(0, 8000)
    with pytest.raises(ValueError, match="to_rate 8000.0"):
        Resampler(8000, 8000.0)


def test_framer_cuts_exact_chunks_and_keeps_the_rest():
    data = bytes(range(256)) * 4  # 1024 bytes
    f = Framer(ULAW_20MS)
    out = []
    i = 0
    for size in (1, 159, 170, 3, 300, 391):  # ragged pushes adding up to 1024
        out += f.push(data[i:i + size])
        i += size
    assert i == len(data)
    assert [len(c) for c in out] == [160] * 6
    assert b"".join(out) == data[:960]
    assert f.pending == 64
    assert f.flush() == data[960:]
    assert f.pending == 0 and f.flush() == b""


def test_framer_flush_pads_with_the_fill_byte():
    f = Framer(4)
    assert f.push(b"abcdef") == [b"abcd"]
    assert f.flush(fill=ULAW_SILENCE) == b"ef\xff\xff"
    assert f.flush(fill=ULAW_SILENCE) == b""


def test_framer_refuses_a_bad_size():
    with pytest.raises(ValueError, match="bytes_per_chunk 0"):
        Framer(0)


def test_caller_to_ulaw_takes_the_left_channel_at_8k_in_20ms_chunks():
    rate = 16000
    left = sine(440, rate, 0.5)
    right = sine(1000, rate, 0.5, amplitude=3000)
    stereo = pcm([v for pair in zip(left, right) for v in pair])
    c = CallerToUlaw(rate, 2)
    out = []
    for i in range(0, len(stereo), 1280):  # the module's 20 ms stereo frames at 16 kHz
        out += c.push(stereo[i:i + 1280])
    assert {len(chunk) for chunk in out} == {ULAW_20MS}
    assert len(out) == 25  # 0.5 s
    expected = ulaw_from_pcm(Resampler(rate, 8000).convert(pcm(left)))
    assert b"".join(out) == expected[:len(out) * ULAW_20MS]
