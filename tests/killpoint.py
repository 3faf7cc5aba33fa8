"""Kill a real tool at a known point of its progress, not after a timer.

`killpoint_command(script, target, condition)` runs tools/SCRIPT in a child Python whose function
`target` ("module:attribute") is wrapped: after a call returns and `condition` (a Python
expression of `n`, the number of calls so far) holds, the child prints KILLPOINT on stdout and
waits. `run_until_killpoint(...)` reads the child's stdout up to that line and SIGKILLs it, so the
child is killed exactly there, whatever the machine's speed.
"""

import signal
import subprocess
import sys
import tempfile

from train_workspace import REPO, tool_command

KILLPOINT = "EZSD-TEST-KILLPOINT"

_CHILD = """
import importlib, os, runpy, sys, time
module_name, attribute = {target!r}.split(":")
module = importlib.import_module(module_name)
owner, name = module, attribute
if "." in attribute:
    owner_name, name = attribute.rsplit(".", 1)
    owner = getattr(module, owner_name)
original, calls = getattr(owner, name), [0]
def hooked(*args, **kwargs):
    result = original(*args, **kwargs)
    calls[0] += 1
    n = calls[0]
    if {condition}:
        print({killpoint!r}, flush=True)
        time.sleep(600)  # the test SIGKILLs us here
    return result
setattr(owner, name, hooked)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def killpoint_command(script, target, condition, *args):
    code = _CHILD.format(target=target, condition=condition, killpoint=KILLPOINT)
    return [sys.executable, "-c", code, *tool_command(script, *args)[1:]]


def run_until_killpoint(command, env, timeout=300):
    """Run `command`, SIGKILL it at its killpoint; fails if it ends (or times out) before."""
    with tempfile.TemporaryFile("w+") as err:  # a file: a full stderr pipe would block the child
        proc = subprocess.Popen(
            command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True
        )
        reached = False
        try:
            for line in proc.stdout:
                if line.strip() == KILLPOINT:
                    reached = True
                    break
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=timeout)
        err.seek(0)
        assert reached, (
            f"the run ended (exit {proc.returncode}) before its kill point: {err.read()[-2000:]}"
        )
    assert proc.returncode == -signal.SIGKILL
