"""Draw the small product photos dags/flex_product_photos.py ships with (dags/data/photos/*.png).

Simple shapes on plain backgrounds, a few kilobytes each: enough for a real image
pipeline (typed by content, counted as image tokens, decoded) without shipping
anyone's pictures. Run once; the PNGs are committed.

    .venv/bin/python scripts/make_product_photos.py
"""

from __future__ import annotations

import csv
from pathlib import Path

from PIL import Image, ImageDraw

DATA = Path(__file__).resolve().parents[1] / "dags" / "data"
PRODUCTS = [
    ("PH-1001", "Ceramic coffee mug", "mug", (196, 64, 52)),
    ("PH-1002", "Garden watering can", "can", (60, 140, 72)),
    ("PH-1003", "Desk lamp", "lamp", (240, 196, 40)),
    ("PH-1004", "Kids' building block", "block", (52, 96, 200)),
    ("PH-1005", "Yoga mat, rolled", "mat", (150, 80, 170)),
    ("PH-1006", "Stainless water bottle", "bottle", (150, 160, 170)),
    ("PH-1007", "Pet food bowl", "bowl", (230, 120, 40)),
    ("PH-1008", "Notebook with elastic band", "notebook", (30, 30, 30)),
]


def draw(shape: str, colour: tuple[int, int, int]) -> Image.Image:
    image = Image.new("RGB", (160, 160), (245, 245, 242))
    pen = ImageDraw.Draw(image)
    if shape in ("mug", "can", "bottle", "lamp"):
        pen.rectangle((55, 40, 105, 130), fill=colour)
        pen.ellipse((100, 60, 130, 100), outline=colour, width=6)
    elif shape in ("bowl",):
        pen.pieslice((30, 40, 130, 140), 0, 180, fill=colour)
    elif shape == "mat":
        pen.ellipse((40, 60, 120, 100), fill=colour)
        pen.rectangle((40, 80, 120, 120), fill=colour)
    else:
        pen.rectangle((40, 35, 120, 125), fill=colour)
    pen.line((20, 140, 140, 140), fill=(200, 200, 196), width=3)
    return image


def main() -> None:
    photos = DATA / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    with (DATA / "product_photos.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sku", "title", "photo"])
        for sku, title, shape, colour in PRODUCTS:
            name = f"photos/{sku.lower()}.png"
            draw(shape, colour).save(DATA / name, optimize=True)
            writer.writerow([sku, title, name])


if __name__ == "__main__":
    main()
