"""The command-line scripts behind `npo-trl` (`npo_trl.cli`): `unlearn` (the default) and `eval_tofu`."""
