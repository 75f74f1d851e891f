"""Functions that need a GPU this host does not have: they run only on rented workers."""

import os

import apothic

app = apothic.App("e2e-rented")


def _where() -> dict:
    # The rented host's agent passes its environment on to its containers.
    return {"provider": os.environ.get("APOTHIC_PROVIDER"), "home": os.environ.get("APOTHIC_HOME")}


@app.function(gpu="A100", max_cost_per_hour_usd=2.0, scaledown_window=2)
def where() -> dict:
    return _where()


@app.function(gpu="H100", scaledown_window=600)
def where_h100() -> dict:
    return _where()


@app.function(gpu="L40S", scaledown_window=2)
def where_l40s() -> dict:
    return _where()
