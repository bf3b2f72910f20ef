"""SessionBook: which sessions this worker opened, and noticing the ones the SDK ended on its own."""

from __future__ import annotations

from mcp_registry.sessions import SessionBook


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_session_the_sdk_dropped_is_swept_once_with_its_lifetime() -> None:
    live: dict[str, object] = {"a": 1, "b": 1}
    clock = Clock()
    book = SessionBook(live, wall=clock, monotonic=clock)
    book.opened("a")
    book.opened("b")
    clock.now = 130.0
    del live["a"]  # the SDK's idle timeout
    (gone,) = book.sweep()
    assert gone.session_id == "a"
    assert book.lifetime(gone) == 30.0
    assert book.sweep() == []
    assert [s.session_id for s in book] == ["b"]


def test_a_deleted_session_is_not_swept_again() -> None:
    live: dict[str, object] = {"a": 1}
    book = SessionBook(live)
    book.opened("a")
    assert book.closed("a") is not None
    del live["a"]
    assert book.sweep() == []
    assert book.closed("a") is None


def test_close_all_ends_everything_held() -> None:
    live: dict[str, object] = {"a": 1, "b": 1}
    book = SessionBook(live)
    book.opened("a")
    book.opened("b")
    assert sorted(s.session_id for s in book.close_all()) == ["a", "b"]
    assert len(book) == 0
