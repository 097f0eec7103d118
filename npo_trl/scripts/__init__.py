"""The command-line scripts behind `npo-trl` (`npo_trl.cli`): `unlearn` (the default), `eval_tofu` and
`eval_muse`."""
