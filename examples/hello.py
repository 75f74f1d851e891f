"""The smallest Apothic program: `apothic run examples/hello.py`."""

import apothic

app = apothic.App("hello")


@app.function(retries=2, timeout=60)
def square(x: int) -> int:
    print(f"squaring {x} on a worker")
    return x * x


@app.local_entrypoint()
def main(n: int = 5) -> None:
    # Each line is printed in one piece: remote output is printed as it arrives, from another
    # thread, and could otherwise land between the parts of a multi-argument print().
    print(f"remote: {square.remote(7)}")
    print(f"map: {list(square.map(range(n)))}")
    call = square.spawn(12)
    print(f"spawned {call.object_id} -> {call.get()}")
    job = apothic.Job.from_id(call.object_id)
    print(f"job status: {job.status()} events: {[e.type for e in job.events()]}")
