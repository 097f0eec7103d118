"""`TOFUCallback`: TOFU's metrics during training (an `UnlearningEvalCallback` with a `TOFUEvaluator`)."""

from ..eval.callback import UnlearningEvalCallback
from .evaluator import TOFUEvaluator
from .settings import TOFUEvalSettings


class TOFUCallback(UnlearningEvalCallback):
    r"""
    Evaluates TOFU's forget quality, model utility and their components before training and at each evaluation point,
    on every process (each scores a shard of the rows; DDP and DeepSpeed ZeRO-3 work). The metrics
    (`tofu/forget_quality`, `tofu/model_utility`, `tofu/forget_prob`, `tofu/forget_rouge`, `tofu/forget_truth_ratio`,
    `tofu/forget_kl`, `tofu/retain_prob`, ..., `tofu/world_facts_truth_ratio`, and with a `"holdout"` set the privacy
    metrics `privacy/mia_*_auc`, `privacy/privleak`, `privacy/forget_exact_memorization`, ...) are logged through the
    trainer and appended to `output_dir/tofu_metrics.jsonl`; evaluation points, logging and best-model selection are
    [`~npo_trl.eval.UnlearningEvalCallback`]'s. The KL to the reference model is reported when the trainer has one. To
    keep the checkpoint with the best forget quality:

    ```python
    >>> args = NPOConfig(..., eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
    ...                  metric_for_best_model="tofu/forget_quality", greater_is_better=True)
    >>> settings = TOFUEvalSettings(prompt_format="plain", max_samples=200)
    >>> stats = compute_reference_stats(retain_model, tokenizer, eval_sets["forget"], settings,
    ...                                 cache_path="retain_stats.json")
    >>> trainer = NPOTrainer(model, args=args, train_dataset=forget, eval_dataset=forget, processing_class=tokenizer,
    ...                      callbacks=[TOFUCallback(tokenizer, eval_sets, reference_stats=stats, settings=settings)])
    ```

    Parameters:
        processing_class ([`~transformers.PreTrainedTokenizerBase`]):
            The trainer's tokenizer.
        eval_sets (`dict[str, Dataset | list[dict]]`):
            TOFU evaluation sets by name among `"forget"`, `"retain"`, `"real_authors"`, `"world_facts"` and
            `"holdout"`, e.g. `npo_trl.tofu.tofu_eval_sets(source, "forget10")`. See [`~npo_trl.tofu.TOFUEvaluator`].
        reference_stats (`dict`, `str` or `None`, *optional*):
            The retain model's statistics from [`~npo_trl.tofu.compute_reference_stats`], or a file
            [`~npo_trl.tofu.load_reference_stats`] reads (ours, open-unlearning's `TOFU_EVAL.json`, TOFU's
            `eval_log_forget.json`). Without them `tofu/forget_quality` is not computed (`null` in the JSONL).
        settings ([`~npo_trl.tofu.TOFUEvalSettings`] or `None`, *optional*):
            How the sets are evaluated: rows per set, the format the training rows were made with (e.g.
            `TOFUEvalSettings(prompt_format="llama3_instruct")`), token boundary, batch sizes, greedy-answer length,
            Min-K% fraction; `None` takes its defaults. `reference_stats` must have been computed under the same
            scoring settings.
        eval_steps (`"epoch"`, `int` or `None`, *optional*, defaults to `"epoch"`):
            Evaluate at the end of each epoch, every `eval_steps` optimizer steps, or (`None`) only when the trainer
            evaluates.
        eval_on_start (`bool`, *optional*, defaults to `True`):
            Evaluate at the start of training (step 0).
    """

    def __init__(self, processing_class, eval_sets, reference_stats=None, settings: TOFUEvalSettings | None = None,
                 eval_steps="epoch", eval_on_start=True):
        super().__init__(TOFUEvaluator(processing_class, eval_sets, reference_stats, settings), eval_steps,
                         eval_on_start)
