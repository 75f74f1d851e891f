"""The benchmark's Apothic apps. Containers import this module by name, so every function is
defined at module level.

`app` holds the warm-path functions; `cold_app` is registered afresh (a new ephemeral app, so new
function ids and no warm container) for each cold-start sample.
"""

import apothic

app = apothic.App("bench")


@app.function(max_containers=2)
def noop(x=None):
    return x


@app.function(max_containers=1, scaledown_window=1)
def cold_noop(x=None):
    return x


cold_app = apothic.App("bench-cold")


@cold_app.function(max_containers=1, scaledown_window=1)
def fresh_noop(x=None):
    return x
