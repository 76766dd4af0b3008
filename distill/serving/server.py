"""`distill serve-model BUNDLE`: verify the bundle, load it onto a batching engine, serve the API."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from distill.serving.deployment import read_deployment


def open_bundle(bundle: str | Path, *, max_batch: int = 64, form: str = "safetensors"):
    """A `ServedModel` for a bundle (its directory or its tar.gz) that matches its manifest (refused otherwise),
    running its safetensors weights or the exported `form` the manifest records as checked."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.release.unpack import verified_bundle
    from distill.serving.api import ServedModel
    from distill.serving.engine import BatchEngine
    from distill.serving.forms import describe, load_form

    with verified_bundle(bundle, purpose="serve") as folder:
        manifest = json.loads((folder / "manifest.json").read_text())
        if form == "safetensors":
            model = AutoModelForCausalLM.from_pretrained(folder).eval()
        else:
            model, parity = load_form(folder, manifest, form)
            print(f"{manifest['name']}-{manifest['version']}: serving {describe(form, parity)}", file=sys.stderr)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    created = int(Path(bundle).stat().st_mtime)
    engine = BatchEngine(model, tokenizer, max_batch=max_batch)
    engine.warm_up()
    return ServedModel(f"{manifest['name']}-{manifest['version']}", engine, created)


def open_deployment(path: Path, *, max_batch: int = 64, form: str = "safetensors"):
    """(models, choose) for a deployment file: each route's bundle, and a picker that sends a request
    for the deployment's name to a route with probability percent/100 (a route's own id picks it)."""
    import random

    deployment = read_deployment(path)
    models = [open_bundle(route["bundle"], max_batch=max_batch, form=form) for route in deployment["routes"]]
    weights = [route["percent"] for route in deployment["routes"]]
    by_id = {m.id: m for m in models}

    def choose(requested: str):
        if requested == deployment["name"]:
            return random.choices(models, weights)[0]
        return by_id.get(requested)

    return models, choose, deployment["name"]


def serve(bundle: Path, *, host: str, port: int, api_key: str | None, capture=None, max_batch: int = 64,
          form: str = "safetensors") -> None:
    import uvicorn

    from distill.serving.api import api_key_check, create_app

    if bundle.is_file() and bundle.suffix == ".json":
        models, choose, name = open_deployment(bundle, max_batch=max_batch, form=form)
    else:
        models, choose = [open_bundle(bundle, max_batch=max_batch, form=form)], None
        name = models[0].id
    app = create_app(models, authorize=api_key_check(api_key) if api_key else None, capture=capture, choose=choose)
    auth = "Bearer key required" if api_key else "NO authentication (pass --api-key or set DISTILL_SERVE_API_KEY)"
    where = f"capturing {capture.rate:.0%} of requests to {capture.path}" if capture else "capture off"
    print(f"serving {name} ({', '.join(m.id for m in models)}) on http://{host}:{port}/v1 ({auth}; {where})",
          file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="warning")
