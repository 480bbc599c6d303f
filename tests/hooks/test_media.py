"""Images in and out over HTTP with the real SDK: parts as the API sees them, token counts, uploads, drawn images."""

from __future__ import annotations

import io
import json
import os

import pytest
from PIL import Image

from airflow_provider_flex.arguments import INLINE_LIMIT_BYTES
from airflow_provider_flex.emulator import FlexEmulator
from airflow_provider_flex.emulator.media import image_size, image_tokens, png
from airflow_provider_flex.hooks.gemini_flex import GeminiFlexHook
from airflow_provider_flex.media import MediaError, probe_media, sniff_mime_type
from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator
from airflow_provider_flex.pricing import DEFAULT_PRICES, IMAGE_OUTPUT_TOKENS
from tests.hooks.conftest import API_KEY, FAST, run_generate, run_stream

MODES = ["sync", "async"]
IMAGE_MODEL = "gemini-2.5-flash-image"


@pytest.fixture
def media_emulator(set_connection):
    with FlexEmulator(seed=3) as emulator:
        set_connection(host=emulator.base_url, password=API_KEY)
        yield emulator


def _jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_types_come_from_the_content_not_the_name(tmp_path):
    lying = tmp_path / "photo.jpg"
    lying.write_bytes(png(10, 10, "x"))
    assert probe_media(str(lying)).mime_type == "image/png"
    assert sniff_mime_type(_jpeg(8, 8)[:64], "x.bin") == "image/jpeg"
    assert sniff_mime_type(b"%PDF-1.7 ...", "x") == "application/pdf"
    assert sniff_mime_type(b"hello there", "notes.txt") == "text/plain"
    assert sniff_mime_type(b"\xff\xfe\x00binary", "notes.txt") is None
    gif = tmp_path / "anim.png"
    gif.write_bytes(b"GIF89a" + b"\x00" * 20)
    with pytest.raises(MediaError, match=r"anim.png' is image/gif, which Gemini does not take"):
        probe_media(str(gif))
    with pytest.raises(MediaError, match="does not exist"):
        probe_media(str(tmp_path / "missing.png"))


def test_the_emulator_counts_images_as_the_api_documents():
    assert image_tokens(384, 384) == 258  # small: one 258-token image
    assert image_tokens(800, 500) == 2 * 258  # larger: 768 x 768 tiles
    assert image_tokens(1600, 1600) == 9 * 258
    assert image_size(_jpeg(640, 480)) == (640, 480)
    assert image_size(png(33, 7, "s")) == (33, 7)


@pytest.mark.parametrize("mode", MODES)
def test_an_inline_image_reaches_the_api_as_its_part_and_counts_as_its_tiles(media_emulator, tmp_path, mode):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(_jpeg(800, 500))
    hook = GeminiFlexHook(retry_policy=FAST)
    response = run_generate(hook, mode, contents="Describe the product", model="gemini-2.5-flash", media=[str(photo)])
    (call,) = media_emulator.admin.calls()
    assert call["parts"] == [
        {"type": "text", "chars": len("Describe the product")},
        {"type": "inline_data", "mime_type": "image/jpeg", "bytes": photo.stat().st_size},
    ]
    from google.genai import types

    counted = hook.client.models.count_tokens(
        model="gemini-2.5-flash",
        contents=["Describe the product", types.Part.from_bytes(data=photo.read_bytes(), mime_type="image/jpeg")],
    ).total_tokens
    assert response.usage.prompt_tokens == counted == 3 + 2 * 258


@pytest.mark.parametrize("mode", MODES)
def test_a_file_over_the_inline_limit_goes_through_the_files_api_and_is_deleted(media_emulator, tmp_path, mode):
    notes = tmp_path / "notes.txt"
    notes.write_text("long notes " * (INLINE_LIMIT_BYTES // 11 + 100))
    response = run_generate(
        GeminiFlexHook(retry_policy=FAST), mode, contents="Summarise", model="gemini-2.5-flash", media=[str(notes)]
    )
    assert response.text
    part = media_emulator.admin.calls()[-1]["parts"][1]
    assert (part["type"], part["mime_type"]) == ("file_data", "text/plain")
    files = media_emulator.admin._request("GET", "/files")
    assert files == {"files": [], "uploads_under_way": 0, "deleted": 1}


@pytest.mark.parametrize("mode", MODES)
def test_a_stream_uploads_its_files_when_read_and_deletes_them_when_it_ends(media_emulator, tmp_path, mode):
    notes = tmp_path / "notes.txt"
    notes.write_text("long notes " * (INLINE_LIMIT_BYTES // 11 + 100))
    hook = GeminiFlexHook(retry_policy=FAST)
    unread = hook.stream_content(contents="Summarise", model="gemini-2.5-flash", media=[str(notes)])
    assert media_emulator.admin._request("GET", "/files") == {"files": [], "uploads_under_way": 0, "deleted": 0}
    pieces, result = run_stream(hook, mode, contents="Summarise", model="gemini-2.5-flash", media=[str(notes)])
    assert pieces and result is not None
    assert media_emulator.admin._request("GET", "/files") == {"files": [], "uploads_under_way": 0, "deleted": 1}
    del unread


@pytest.mark.parametrize("mode", MODES)
def test_an_image_model_draws_real_images_billed_at_the_image_price(media_emulator, mode):
    response = run_generate(
        GeminiFlexHook(retry_policy=FAST),
        mode,
        contents="A thumbnail of a red mug",
        model=IMAGE_MODEL,
        config={"response_modalities": ["IMAGE"]},
    )
    (image,) = response.images
    decoded = Image.open(io.BytesIO(image.data))
    decoded.load()  # a real decoder reads every pixel
    assert (image.mime_type, decoded.format, decoded.size) == ("image/png", "PNG", (64, 64))
    assert response.usage.image_output_tokens == IMAGE_OUTPUT_TOKENS[IMAGE_MODEL]
    flex = DEFAULT_PRICES[IMAGE_MODEL]["flex"]
    expected = (response.usage.prompt_tokens * flex.input + IMAGE_OUTPUT_TOKENS[IMAGE_MODEL] * flex.image_output) / 1e6
    assert response.cost_usd == pytest.approx(expected)
    as_dict = response.to_dict()
    assert as_dict["images"] == [{"mime_type": "image/png", "bytes": len(image.data)}]  # no bytes in XCom
    json.dumps(as_dict)


def _photo_rows(tmp_path, count: int) -> list[dict]:
    photos = tmp_path / "photos"
    photos.mkdir()
    rows = []
    for i in range(count):
        path = photos / f"p{i:02d}.png"
        path.write_bytes(png(48 + i, 40, f"photo {i}"))
        rows.append({"sku": f"sku-{i:02d}", "title": f"product {i}", "photo": f"photos/{path.name}"})
    return rows


def test_a_mixed_enrichment_makes_every_row_a_result_or_a_dead_letter_naming_its_file(media_emulator, tmp_path):
    rows = _photo_rows(tmp_path, 20)
    rows[3]["photo"] = "photos/missing.png"
    (tmp_path / "photos" / "p05.png").write_bytes(b"GIF89a" + b"\x00" * 64)  # unsupported, whatever its name
    # (trailing bytes after a PNG's end are ignored by decoders: a simple way to make a file large)
    (tmp_path / "photos" / "p08.png").write_bytes(png(64, 64, "big") + os.urandom(500_000))  # over max_media_bytes
    (tmp_path / "photos" / "p11.png").write_bytes(png(64, 64, "medium") + os.urandom(250_000))  # uploaded
    rows[14]["photo"] = rows[11]["photo"]  # two rows, one upload
    output = tmp_path / "out"
    operator = GeminiFlexEnrichOperator(
        task_id="photos",
        records=rows,
        key_field="sku",
        prompt_template="Attributes of {{ row.title }}",
        media_fields=["photo"],
        media_root=str(tmp_path),
        output_path=str(output),
        model="gemini-2.5-flash",
        retry_policy=FAST,
        inline_media_bytes=200_000,
        max_media_bytes=400_000,
        max_failed_fraction=0.5,
    )
    summary = operator.execute(context={})
    results = [json.loads(line) for f in output.glob("results-*.jsonl") for line in f.read_text().splitlines()]
    failed = [json.loads(line) for f in output.glob("failed*.jsonl") for line in f.read_text().splitlines()]
    assert (summary["succeeded"], summary["failed"]) == (17, 3)
    assert {r["key"] for r in results} | {f["key"] for f in failed} == {row["sku"] for row in rows}
    errors = {f["key"]: f["error"] for f in failed}
    assert "field 'photo'" in errors["sku-03"] and "missing.png' does not exist" in errors["sku-03"]
    assert "p05.png' is image/gif, which Gemini does not take" in errors["sku-05"]
    assert "p08.png' is 0.5 MB, above the 0.4 MB allowed" in errors["sku-08"]
    calls = media_emulator.admin.calls()
    assert len(calls) == 17  # the bad rows were refused before their calls
    uploaded = [c for c in calls if c["parts"][1]["type"] == "file_data"]
    assert len(uploaded) == 2 and len({c["parts"][1]["file_uri"] for c in uploaded}) == 1  # uploaded once
    assert media_emulator.admin._request("GET", "/files")["files"] == []  # and deleted when the run ended


def test_images_out_are_written_per_row_referenced_from_results_and_a_rerun_skips_them(media_emulator, tmp_path):
    rows = [{"sku": f"mug/{i}", "title": f"mug {i}"} for i in range(4)]
    output = tmp_path / "thumbs"

    def run() -> dict:
        return GeminiFlexEnrichOperator(
            task_id="thumbnails",
            records=rows,
            key_field="sku",
            prompt_template="A square thumbnail of {{ row.title }}",
            output_path=str(output),
            model=IMAGE_MODEL,
            generation_config={"response_modalities": ["IMAGE"]},
            retry_policy=FAST,
        ).execute(context={})

    first = run()
    results = [json.loads(line) for f in output.glob("results-*.jsonl") for line in f.read_text().splitlines()]
    assert first["succeeded"] == 4
    for result in results:
        (location,) = result["images"]
        assert location.startswith(str(output / "images") + "/")
        with Image.open(location) as image:
            image.load()
            assert image.size == (64, 64)
    written = {p.name: p.stat().st_mtime_ns for p in (output / "images").iterdir()}
    assert len(written) == 4 and all(name.startswith("mug_") for name in written)
    second = run()
    assert (second["skipped"], second["succeeded"]) == (4, 0)
    assert len(media_emulator.admin.calls()) == 4  # nothing paid twice
    assert {p.name: p.stat().st_mtime_ns for p in (output / "images").iterdir()} == written


def test_the_input_token_limit_counts_media_tokens(set_connection, tmp_path):
    photo = tmp_path / "wide.jpg"
    photo.write_bytes(_jpeg(800, 500))  # 516 tokens of image, 1 of text
    with FlexEmulator(input_token_limit=400) as emulator:
        set_connection(host=emulator.base_url, password=API_KEY)
        from airflow_provider_flex.exceptions import FlexRequestError

        with pytest.raises(FlexRequestError, match=r"input token count \(517\) exceeds"):
            GeminiFlexHook(retry_policy=FAST).generate_content(contents="Describe", media=[str(photo)])
