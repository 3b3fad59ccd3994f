"""One module per rule file (workflow/rules/<stage>.smk), beside the helpers only that stage uses.

A stage imports core only, never another stage (tests/test_layers.py): its code hash (core.stage.code_hash), and so
what reruns, is its own module plus the core modules it uses.
"""
