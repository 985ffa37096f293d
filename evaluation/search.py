"""`evaluate.py --query`: photos and folders of photos searched against a saved gallery index.

Photos go through the same embedding function as the gallery (float32, evaluation.embed), the
search is exact (evaluation.knn.Searcher, or the saved faiss index with --knn_backend faiss), and the
results are printed, optionally written (--results) and drawn one figure per query, named after the
query so that no query's figure replaces another's.
"""
from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.errors import UserError
from data.decode import UnreadableImage, decode_image
from data.index import IMAGE_SUFFIXES, printable
from evaluation.embed import embed_photos
from evaluation.figures import render_query_page
from evaluation.gallery import Gallery
from evaluation.gallery_index import GalleryIndex
from evaluation.knn import Searcher
from evaluation.results import ResultRow, format_results, result_rows, write_results


def run_search(args: argparse.Namespace, model: nn.Module, device: torch.device, gallery: Gallery,
               index: GalleryIndex, run_label: str, fig_dir: Path) -> list[ResultRow]:
    """Search every --query photo, print the results, write --results, draw the figures."""
    files, photos = read_queries(args.query, model.input_size)
    queries = embed_photos(model, photos, device=device)
    searcher = Searcher(index.tensor(), faiss_index=_faiss_index(index, args.knn_backend))
    dists, idx = (t.numpy() for t in searcher.search(queries, args.num_neighbours))
    rows = result_rows(files, index.items, index.paths, dists, idx)
    print(format_results(rows))
    if args.results:
        write_results(Path(args.results), rows)
        print(f"wrote {len(rows)} result rows ({len(files)} queries) to {args.results}")
    if not args.no_figures:
        title = f"{run_label}; gallery {gallery.name}"
        for number, (file, name) in enumerate(zip(files, figure_names(files))):
            render_query_page(photos[number:number + 1], [printable(file.name)], gallery.images,
                              idx[number:number + 1], dists[number:number + 1], title=title,
                              out_path=fig_dir / name if args.save_fig else None,
                              fallback_dir=fig_dir, fallback_name=name)
        if args.save_fig:
            print(f"saved {len(files)} query figure(s) to {fig_dir}/")
    return rows


def _faiss_index(index: GalleryIndex, backend: str) -> object | None:
    if backend != "faiss":
        return None
    found = index.faiss_index()
    if found is None:
        raise UserError("--knn_backend faiss: faiss is not installed; `pip install faiss-cpu` or use "
                        "--knn_backend torch (same results)")
    return found


def figure_names(files: list[Path]) -> list[str]:
    """`<photo stem>-<hash of its absolute path>.png`: one file per query photo, stable across
    calls, and two photos with the same name in different folders never share a figure."""
    names = []
    for file in files:
        where = hashlib.sha1(os.path.abspath(file).encode("utf-8", "surrogateescape")).hexdigest()[:8]
        names.append(f"{file.stem}-{where}.png")
    return names


def read_queries(specs: list[str], size: int) -> tuple[list[Path], np.ndarray]:
    """The readable photos among `specs` (files, and image files found under folders), decoded.

    Unreadable ones are skipped and named in one warning; if none is readable, a UserError.
    """
    files, skipped = _query_files(specs)
    photos, kept = [], []
    for file in files:
        try:
            photos.append(decode_image(file, size))
            kept.append(file)
        except UnreadableImage as err:
            skipped.append(f"{file} ({err})")
    if not kept:
        raise UserError(f"--query: none of the photos could be read: {'; '.join(skipped[:5])}; "
                        "give image files (jpg, png, ...) or folders holding them")
    if skipped:
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        print(f"warning: --query: skipped {len(skipped)} unreadable: {', '.join(skipped[:5])}{more}")
    return kept, np.stack(photos)


def _query_files(specs: list[str]) -> tuple[list[Path], list[str]]:
    """Files named, plus image files under folders named (recursively, sorted); missing ones apart."""
    files, missing = [], []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                           and not any(part.startswith(".") for part in f.relative_to(path).parts))
            files += found
            if not found:
                missing.append(f"{path} (folder holds no images)")
        elif path.is_file():
            files.append(path)
        else:
            missing.append(f"{path} (no such file)")
    return files, missing
