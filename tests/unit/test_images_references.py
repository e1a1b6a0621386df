"""supervisor/images/references.py: docker's reference grammar, and which image a reference,
an id or an id prefix names in an index (pure: no store)."""

from __future__ import annotations

import pytest

from supervisor.errors import Conflict, InvalidArgument, NotFound
from supervisor.images.references import find_image, parse_reference


@pytest.mark.parametrize(
    "reference, parsed",
    [
        ("base", "base:latest"),
        ("base:v1", "base:v1"),
        ("library/busy-box_2.x:1.36.1-musl", "library/busy-box_2.x:1.36.1-musl"),
        ("a__b/c", "a__b/c:latest"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
        ("registry.example.com:5000/team/app:prod", "registry.example.com:5000/team/app:prod"),
        ("localhost:5000", "localhost:5000"),  # docker reads this as name "localhost", tag "5000"
    ],
)
def test_valid_references(reference, parsed):
    assert parse_reference(reference) == parsed


@pytest.mark.parametrize(
    "reference",
    ["", "Base", "base:", ":tag", "-base", "base-", "a//b", "a/", "a:b:c", "base:-x", "base:" + "t" * 129,
     "a___b", "base@sha256:" + "0" * 64, "a b", "a\x00", "0" * 64, "x/" * 128 + "x"],
)
def test_invalid_references(reference):
    with pytest.raises(InvalidArgument, match="invalid reference format"):
        parse_reference(reference)



A, B = "abc1" + "0" * 60, "abc2" + "0" * 60
INDEX = {"images": {A: {}, B: {}}, "tags": {"app:latest": A, "abc2:latest": A}}


@pytest.mark.parametrize("ref, found", [
    ("app", (A, "app:latest")), ("app:latest", (A, "app:latest")), (A, (A, None)), (f"sha256:{B}", (B, None)),
    ("abc1", (A, None)), ("abc2", (A, "abc2:latest")),  # a tag wins over an id prefix
])
def test_an_image_is_found_by_tag_id_or_unique_prefix(ref, found):
    assert find_image(INDEX, ref) == found


@pytest.mark.parametrize("ref, error, message", [
    ("abc", Conflict, "ambiguous"), ("ab", NotFound, "no such image: ab"), ("other", NotFound, "no such image"),
    ("sha256:xyz", InvalidArgument, "invalid reference"), ("Not A Ref", InvalidArgument, "invalid reference"),
])
def test_a_reference_that_names_no_single_image_is_refused(ref, error, message):
    with pytest.raises(error, match=message):
        find_image(INDEX, ref)


DIGEST = "sha256:" + "d" * 64
WITH_DIGESTS = {**INDEX, "digests": {f"app@{DIGEST}": B}}


@pytest.mark.parametrize("ref", [f"app@{DIGEST}", f"app:latest@{DIGEST}", f"app:other@{DIGEST}"])
def test_an_image_is_found_by_its_repo_digest_whatever_tag_stands_beside_it(ref):
    assert find_image(WITH_DIGESTS, ref) == (B, None)


@pytest.mark.parametrize("ref, error, message", [
    (f"other@{DIGEST}", NotFound, "no image of other has the digest"),
    ("app@sha256:" + "e" * 64, NotFound, "no such image: app@sha256:e"),
    ("app@sha256:abc", InvalidArgument, "sha256:<64 hex digits>"),
    ("app@md5:" + "d" * 32, InvalidArgument, "sha256:<64 hex digits>"),
    (f"Bad@{DIGEST}", InvalidArgument, "must be lowercase"),
])
def test_a_digest_reference_that_names_no_image_is_refused_clearly(ref, error, message):
    with pytest.raises(error, match=message):
        find_image(WITH_DIGESTS, ref)
