"""Caption building and mention detection."""

from kneurons.captions import describe, mention_span, mentions


def test_plural_and_multiword_mentions():
    assert mentions("two bears on a field", "bear")
    assert mentions("some buses .", "bus")
    assert mentions("cherries everywhere", "cherry")
    assert mentions("a red fire hydrant .", "fire hydrant")
    assert mentions("three fire hydrants", "fire hydrant")
    assert mentions("A STOP SIGN", "stop sign")


def test_no_false_hits():
    assert not mentions("a category of things", "cat")
    assert not mentions("a fire near a hydrant", "fire hydrant")
    assert not mentions("a sign that says stop", "stop sign")
    assert not mentions("the bearing broke", "bear")
    assert not mentions("", "bear")


def test_synonyms():
    assert mentions("a motorbike", "motorcycle", synonyms=["motorbike"])
    assert not mentions("a motorbike", "motorcycle")


def test_describe_lists_objects_with_articles():
    assert describe("grassy field", []) == "grassy field ."
    assert describe("blue sky", ["airplane"]) == "blue sky with an airplane ."
    caption = describe("brick wall", ["bear", "bus", "fire hydrant"])
    assert caption == "brick wall with a bear , a bus and a fire hydrant ."
    assert all(mentions(caption, n) for n in ("bear", "bus", "fire hydrant"))


def test_mention_span_points_at_the_first_mention():
    caption = "a scene with two buses and a bus"
    start, end = mention_span(caption, "bus")
    assert caption[start:end] == "buses"
    caption = "Grass with a Fire  Hydrant ."
    start, end = mention_span(caption, "fire hydrant")
    assert caption[start:end] == "Fire  Hydrant"
    assert mention_span("nothing here", "bear") is None


def test_mention_spans_index_the_caption_whatever_lower_case_does_to_its_length():
    # "İ".lower() is two characters ("i" and a combining dot): matching on caption.lower() shifted every offset
    assert mention_span("İİİ dog and a bus", "dog") == (4, 7)
    assert mention_span("İstanbul has a cat", "istanbul") == (0, 8)
    assert mention_span("ẞ and ﬁ then a Dog", "dog") == (15, 18)
    caption = "İİ a TEDDY BEARS."
    start, end = mention_span(caption, "teddy bear")
    assert caption[start:end] == "TEDDY BEARS"
