"""Code that runs inside the sandboxed interpreter, never in ours.

`Sandbox` copies this folder's modules into its support folder; bootstrap.py runs as
the sandbox's main script and, in hermetic mode, loads the rest as the package
`_rlaif_hermetic` (hooks.py its entry point). Standard library only, and nothing
from rlaif_code: the exec env's interpreter has neither.
"""
