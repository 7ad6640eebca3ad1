"""Stop strings: never emitted, hold back only what could still become one."""

import random

import pytest

from slmkit.text import StopMatcher


def feed_all(matcher: StopMatcher, pieces) -> tuple[str, bool]:
    out = []
    for piece in pieces:
        text, stopped = matcher.feed(piece)
        out.append(text)
        if stopped:
            return "".join(out), True
    out.append(matcher.flush())
    return "".join(out), False


def test_no_stops_pass_text_through_at_once():
    matcher = StopMatcher([])
    assert matcher.feed("abc<") == ("abc<", False)
    assert matcher.flush() == ""
    assert matcher.matched is None


def test_stop_split_across_tokens():
    matcher = StopMatcher(["STOP"])
    assert matcher.feed("Hello ST") == ("Hello ", False)
    assert matcher.feed("OP and more") == ("", True)
    assert matcher.matched == "STOP"
    assert matcher.feed("later") == ("", True)
    assert matcher.flush() == ""


def test_stop_split_character_by_character():
    assert feed_all(StopMatcher(["<end>"]), "ab<end>cd") == ("ab", True)


def test_holds_back_only_the_possible_prefix():
    matcher = StopMatcher(["<end>"])
    assert matcher.feed("abc<") == ("abc", False)
    assert matcher.held_back == "<"
    assert matcher.feed("x") == ("<x", False)
    assert matcher.held_back == ""


def test_holds_back_the_longest_possible_prefix():
    matcher = StopMatcher(["<end>"])
    assert matcher.feed("a<e") == ("a", False)
    assert matcher.feed("n") == ("", False)
    assert matcher.feed("<") == ("<en", False)
    assert matcher.held_back == "<"


def test_text_after_the_stop_is_dropped_in_the_same_feed():
    matcher = StopMatcher(["\n\n"])
    assert matcher.feed("one\n\ntwo") == ("one", True)


def test_multiple_stops_earliest_wins():
    matcher = StopMatcher(["World", "lo"])
    assert matcher.feed("Hello World") == ("Hel", True)
    assert matcher.matched == "lo"


def test_multiple_stops_result_does_not_depend_on_splitting():
    stops = ["bc", "abcd", "c", "xyz"]
    text = "zzabcdxyz"
    whole = feed_all(StopMatcher(stops), [text])
    by_char = feed_all(StopMatcher(stops), list(text))
    assert whole == by_char == ("zza", True)


def test_stop_at_the_very_start():
    matcher = StopMatcher(["<|end|>"])
    assert matcher.feed("<|end|>tail") == ("", True)
    assert matcher.matched == "<|end|>"


def test_overlapping_stop_begins_inside_held_back_text():
    assert feed_all(StopMatcher(["ab"]), "aab") == ("a", True)
    assert feed_all(StopMatcher(["aab"]), "aaab") == ("a", True)


def test_stop_that_begins_inside_a_failed_candidate():
    # "<<end>": the first "<" stops being a candidate only when the second arrives.
    assert feed_all(StopMatcher(["<end>"]), "x<<end>") == ("x<", True)


def test_flush_returns_held_back_text():
    matcher = StopMatcher(["</s>"])
    assert matcher.feed("bye </") == ("bye ", False)
    assert matcher.flush() == "</"
    assert matcher.flush() == ""


def test_duplicate_and_empty_stops_are_ignored():
    matcher = StopMatcher(["x", "x", ""])
    assert matcher.stops == ("x",)
    assert matcher.feed("abc") == ("abc", False)


@pytest.mark.parametrize("seed", range(20))
def test_random_splits_match_whole_text(seed):
    rng = random.Random(seed)
    alphabet = "ab<>e"
    stops = ["<e>", "ab", "b<", "eee"][: rng.randint(1, 4)]
    text = "".join(rng.choice(alphabet) for _ in range(40))
    cuts = sorted(rng.sample(range(1, len(text)), rng.randint(0, 15)))
    pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)])]
    assert feed_all(StopMatcher(stops), pieces) == feed_all(StopMatcher(stops), [text])
