"""Segment parsers (table tests) and the pure segmentation function."""

from __future__ import annotations

import pytest

from kidwhisper.data.segment import (
    FIX_CLAMPED,
    REASON_BAD_SPAN,
    REASON_BEYOND_END,
    Segment,
    SegmentParseError,
    parse_srt,
    parse_table,
    parse_textgrid,
    parse_timestamp,
    parse_vtt,
    segment_recording,
    too_long_reason,
)

TEXTGRID_LONG = '''File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = 10.5
tiers? <exists>
size = 2
item []:
    item [1]:
        class = "IntervalTier"
        name = "utterances"
        xmin = 0
        xmax = 10.5
        intervals: size = 4
        intervals [1]:
            xmin = 0
            xmax = 1.25
            text = ""
        intervals [2]:
            xmin = 1.25
            xmax = 3.5
            text = "MARK IS GOING"
        intervals [3]:
            xmin = 3.5
            xmax = 4
            text = "   "
        intervals [4]:
            xmin = 4
            xmax = 10.5
            text = "SHE SAID ""HI"" [2] TO 3 DOGS"
    item [2]:
        class = "TextTier"
        name = "events"
        xmin = 0
        xmax = 10.5
        points: size = 1
        points [1]:
            number = 2.0
            mark = "cough"
'''

TEXTGRID_SHORT = '''File type = "ooTextFile"
Object class = "TextGrid"

0
10.5
<exists>
2
"IntervalTier"
"utterances"
0
10.5
4
0
1.25
""
1.25
3.5
"MARK IS GOING"
3.5
4
"   "
4
10.5
"SHE SAID ""HI"" [2] TO 3 DOGS"
"TextTier"
"events"
0
10.5
1
2.0
"cough"
'''

EXPECTED_TG = [Segment(1.25, 3.5, "MARK IS GOING"), Segment(4.0, 10.5, 'SHE SAID "HI" [2] TO 3 DOGS')]


@pytest.mark.parametrize("text", [TEXTGRID_LONG, TEXTGRID_SHORT], ids=["long", "short"])
def test_parse_textgrid_long_and_short_format(text):
    assert parse_textgrid(text) == EXPECTED_TG


def test_parse_textgrid_picks_named_tier_and_rejects_other_files():
    two_tiers = TEXTGRID_SHORT.replace('2\n"IntervalTier"', '2\n"IntervalTier"', 1).replace(
        '"TextTier"\n"events"\n0\n10.5\n1\n2.0\n"cough"', '"IntervalTier"\n"words"\n0\n10.5\n1\n0\n10.5\n"ALL"')
    assert parse_textgrid(two_tiers, tier="words") == [Segment(0.0, 10.5, "ALL")]
    assert parse_textgrid(two_tiers) == EXPECTED_TG  # first interval tier by default
    with pytest.raises(SegmentParseError, match="no interval tier named"):
        parse_textgrid(two_tiers, tier="phones")
    with pytest.raises(SegmentParseError, match="not a Praat TextGrid"):
        parse_textgrid("1\n00:00:01,000 --> 00:00:02,000\nHI\n")
    with pytest.raises(SegmentParseError, match="ends early"):
        parse_textgrid(TEXTGRID_SHORT[:-40])


SRT = """1
00:00:01,000 --> 00:00:03,500
<i>Hello</i> there,
second line

2
00:00:04,250 --> 00:01:02,000
{\\an8}I &amp; you
"""

VTT = """WEBVTT - kids session

NOTE written by hand
over two lines

intro
00:01.000 --> 00:03.500 align:start position:10%
<v Child A>Hello</v> <c.loud>there</c>

00:00:04.250 --> 00:00:06.000
<v.teacher Ms Lee>Say it again
"""


@pytest.mark.parametrize(
    "parser, text, expected",
    [
        (parse_srt, SRT, [Segment(1.0, 3.5, "Hello there, second line"), Segment(4.25, 62.0, "I & you")]),
        (parse_vtt, VTT, [Segment(1.0, 3.5, "Hello there", "Child A"), Segment(4.25, 6.0, "Say it again", "Ms Lee")]),
        (parse_srt, "\ufeff1\r\n00:00:00,500 --> 00:00:01,000\r\nA\r\n", [Segment(0.5, 1.0, "A")]),
        (parse_vtt, "WEBVTT\n\n00:00.000 --> 00:02.000\nB\n", [Segment(0.0, 2.0, "B")]),
    ],
)
def test_parse_subtitles(parser, text, expected):
    assert parser(text) == expected


@pytest.mark.parametrize(
    "parser, text, match",
    [
        (parse_srt, "1\n00:00:01 --> 00:00:02\nA\n", "bad SRT timing line"),
        (parse_srt, "1\nno timing here\n", "without a 'start --> end' line"),
        (parse_vtt, "00:00.000 --> 00:02.000\nB\n", "must start with 'WEBVTT'"),
    ],
)
def test_parse_subtitles_errors(parser, text, match):
    with pytest.raises(SegmentParseError, match=match):
        parser(text)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0.5,1.5,HELLO\n2,3.25,WORLD,spk1\n",
         [Segment(0.5, 1.5, "HELLO"), Segment(2.0, 3.25, "WORLD", "spk1")]),
        ("start,end,text,speaker\n0.5,1.5,\"HI, YOU\",a\n", [Segment(0.5, 1.5, "HI, YOU", "a")]),
        ("Speaker\tText\tEnd\tBegin\nb\tHI\t00:00:02.500\t00:00:01.000\n", [Segment(1.0, 2.5, "HI", "b")]),
        ("0\t1\tTAB SEPARATED, WITH COMMA\n", [Segment(0.0, 1.0, "TAB SEPARATED, WITH COMMA")]),
        ("\n0,1,A\n\n1,2,\n", [Segment(0.0, 1.0, "A"), Segment(1.0, 2.0, "")]),  # empty text kept: a skip later
        ("", []),
    ],
)
def test_parse_table(text, expected):
    assert parse_table(text) == expected


@pytest.mark.parametrize(
    "text, match",
    [
        ("a,b,text\n0,1,A\n", "has no start/end column"),
        ("0,1,A,b,c\n", "line 1: 5 fields"),
        ("0,1,A\n0,x,B\n", "line 2: bad time 'x'"),
        ("0,1\n", "line 1: 2 fields"),
    ],
)
def test_parse_table_errors(text, match):
    with pytest.raises(SegmentParseError, match=match):
        parse_table(text)


@pytest.mark.parametrize(
    "value, seconds",
    [("62.5", 62.5), ("01:02.500", 62.5), ("00:01:02,500", 62.5), ("1:00:00.0", 3600.0), ("7", 7.0)],
)
def test_parse_timestamp(value, seconds):
    assert parse_timestamp(value) == pytest.approx(seconds)


def test_segment_recording_skips_with_reasons_and_keeps_the_rest():
    segments = [
        Segment(0.0, 2.0, "A"),
        Segment(2.0, 1.0, "BACKWARDS"),
        Segment(3.0, 40.0, "TOO LONG"),
        Segment(60.5, 62.0, "AFTER END"),
        Segment(58.0, 61.0, "CROSSES END"),
        Segment(58.0, 60.01, "ROUNDED END", "s1", id="explicit"),
    ]
    clips, skips = segment_recording("rec", 60.0, segments)
    assert [(c.id, c.start, c.end, c.text) for c in clips] == [
        ("rec_0001", 0.0, 2.0, "A"), ("explicit", 58.0, 60.0, "ROUNDED END")]
    assert clips[1].fixes == (FIX_CLAMPED,) and clips[1].speaker == "s1"
    assert [(s.id, s.reason) for s in skips] == [
        ("rec_0002", REASON_BAD_SPAN),
        ("rec_0003", "longer than 30 s (Whisper's window)"),
        ("rec_0004", REASON_BEYOND_END),
        ("rec_0005", REASON_BEYOND_END),
    ]
    assert "recording lasts 60.000 s" in skips[2].detail


def test_segment_recording_respects_a_lower_max_duration():
    clips, skips = segment_recording("r", 100.0, [Segment(0, 25, "A"), Segment(30, 40, "B")], max_duration=20)
    assert [c.text for c in clips] == ["B"]
    assert skips[0].reason == too_long_reason(20) == "longer than 20 s (--max-duration)"
