"""The plain design, as a baseline for the interactive lane: Flask under gunicorn's
sync workers, the model in each process (one thread; torch fp32 as the issue that
asked for it specified, or DIGITS_RUNTIME's), one image per request through the same
decoding, normalisation, model and verdict as a worker.

    gunicorn -w 2 -k sync 'bench.plain_app:create_app()'
"""

from __future__ import annotations

from flask import Flask, jsonify, request


def create_app() -> Flask:
    import torch

    torch.set_num_threads(1)
    from shared.settings import get_settings
    from worker import processing
    from worker.inference import Predictor

    settings = get_settings()
    holder: dict = {}
    app = Flask(__name__)

    @app.post("/predict")
    def predict():
        # Built on first use, after gunicorn's fork, as a model server would.
        if "model" not in holder:
            holder["model"] = Predictor(settings.model_path, "cpu", settings.max_batch_size, 1,
                                        settings.runtime)
        predictor = holder["model"]
        outcome = processing.classify([request.get_data()], predictor)[0]
        return jsonify({**outcome.as_dict(), "model_version": predictor.version})

    return app
