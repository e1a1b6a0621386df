"""supervisor/runtime/jsonlite.py: json's results and errors without importing json."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from supervisor.runtime import jsonlite
from supervisor.ociruntime.template import default_spec

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCUMENTS = [default_spec(), {"a": [1, -2.5, 1e300, None, True, False, "é\n\"\\\u2028", {}], "": []}, [], "x", 0,
             {"nested": {"deep": [[[{"k": "v"}]]]}}]


@pytest.mark.parametrize("document", DOCUMENTS, ids=range(len(DOCUMENTS)))
def test_documents_round_trip_as_json_writes_and_reads_them(document):
    text = jsonlite.dumps(document)
    assert text == json.dumps(document, separators=(",", ":"))
    assert jsonlite.loads(text) == document
    assert jsonlite.loads(json.dumps(document, indent=4).encode()) == document
    assert jsonlite.loads(b"\xef\xbb\xbf" + text.encode()) == document  # a UTF-8 BOM, as json.loads(bytes)


@pytest.mark.parametrize("document", DOCUMENTS + [{"id": "x", "pid": 7, "annotations": {}, "list": [1, [], {"k": []}]}],
                         ids=range(len(DOCUMENTS) + 1))
def test_indented_output_is_json_s(document):
    # dockyard-runtime state prints it (json.dumps(indent=2) before, which imports re).
    assert jsonlite.dumps_indented(document) == json.dumps(document, indent=2)
    assert jsonlite.dumps_indented(document, 4) == json.dumps(document, indent=4)


@pytest.mark.parametrize("text", ["", "  ", "{", "{} x", "[1,]", '{"a" 1}', "nul", '"\x01"'])
def test_malformed_documents_raise_json_s_own_error(text):
    with pytest.raises(ValueError) as raised:
        jsonlite.loads(text)
    with pytest.raises(ValueError) as expected:
        json.loads(text)
    assert str(raised.value) == str(expected.value)


def test_values_json_cannot_write_are_refused():
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        jsonlite.dumps({"a": {1}})
    loop: list = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular"):
        jsonlite.dumps(loop)


def test_neither_json_nor_re_is_imported():
    code = ("import sys\nfrom supervisor.runtime import jsonlite\n"
            "assert jsonlite.loads(jsonlite.dumps({'a': [1, 'b']})) == {'a': [1, 'b']}\n"
            "assert jsonlite.loads(b'\\xef\\xbb\\xbf[1]') == [1]\n"
            "print(sorted(m for m in ('json', 're', 'encodings.utf_8_sig') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr
