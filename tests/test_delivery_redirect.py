"""A STOW endpoint that answers with a redirect gets nothing more: no request the app makes follows a
3xx, whatever the method, the body's size (below and above dicomweb-client's 1 MB streaming size) or
the Location's origin. The redirect is a failed delivery, not retried, whose reason names the status
and the Location without its user info or query."""
import json

import pydicom
import pytest

from fake_pacs import FakeStow
from spineseg.delivery.send import RetryPolicy, StowDestination, deliver_all

TOKEN = "tok-8d1e0b5a"
STREAMING_SIZE = 10**6      # dicomweb-client's default chunk_size: bodies above it are sent chunked


def uid_of(path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


@pytest.fixture(scope="module")
def large_seg(small_seg, tmp_path_factory):
    """The small SEG with a 1.5 MB private element: its STOW body is streamed in chunks."""
    ds = pydicom.dcmread(small_seg)
    block = ds.private_block(0x0009, "SPINESEG TEST", create=True)
    block.add_new(0x00, "OB", bytes(1_500_000))
    path = tmp_path_factory.mktemp("large_seg") / "seg.dcm"
    ds.save_as(path)
    assert path.stat().st_size > STREAMING_SIZE
    return path


def deliver_to_redirecting(seg, status, location, **dest):
    with FakeStow("redirect", status=status, location=location) as first:
        entry = deliver_all([seg], [StowDestination(first.url, timeout=5, **dest)],
                            RetryPolicy(max_attempts=3, initial_delay=0.1, total_seconds=10))
        return entry, first.requests


@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("status", [307, 308, 301, 302, 303])
def test_a_redirect_to_another_server_sends_it_nothing(small_seg, large_seg, size, status):
    seg = small_seg if size == "small" else large_seg
    with FakeStow("ok", uid_of(seg)) as second:
        target = second.url.replace("http://", "http://intruder:s3cret@") + "/studies?access_token=q-77"
        delivery, sent = deliver_to_redirecting(seg, status, target, token=TOKEN)
        got, got_bytes = list(second.requests), second.received
    (entry,) = delivery["destinations"]
    assert got == [] and got_bytes == 0, (got, got_bytes)
    assert delivery["all_delivered"] is False and len(sent) == 1, sent
    assert (sent[0]["headers"].get("Transfer-Encoding") == "chunked") == (size == "large")
    assert entry["status"] == "failed" and entry["retryable"] is False and entry["attempts"] == 1, entry
    assert f"HTTP {status}" in entry["reason"] and second.url + "/studies" in entry["reason"], entry["reason"]
    text = json.dumps(delivery)
    assert "s3cret" not in text and "intruder" not in text and "q-77" not in text and TOKEN not in text


def test_a_relative_redirect_on_the_same_server_is_not_followed_either(small_seg):
    delivery, sent = deliver_to_redirecting(small_seg, 307, "/other/studies", user="ai", password="pw-5521")
    (entry,) = delivery["destinations"]
    assert len(sent) == 1 and entry["status"] == "failed" and entry["attempts"] == 1, (sent, entry)
    assert "HTTP 307" in entry["reason"] and "/other/studies" in entry["reason"], entry["reason"]
    assert "pw-5521" not in json.dumps(delivery)
