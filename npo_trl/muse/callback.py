"""`MUSECallback`: MUSE's criteria during training (an `UnlearningEvalCallback` with a `MUSEEvaluator`)."""

from ..eval.callback import UnlearningEvalCallback
from .evaluator import MUSEEvaluator
from .settings import MUSEEvalSettings


class MUSECallback(UnlearningEvalCallback):
    r"""
    Evaluates MUSE's VerbMem, KnowMem and PrivLeak before training and at each evaluation point, on every process
    (each generates for and scores a shard of the rows; DDP and DeepSpeed ZeRO-3 work). The metrics
    (`muse/verbmem_forget`, `muse/knowmem_forget`, `muse/knowmem_retain`, `muse/privleak`, `muse/abs_privleak`,
    `muse/mia_<attack>_auc`) are logged through the trainer and appended to `output_dir/muse_metrics.jsonl`;
    evaluation points, logging and best-model selection are [`~npo_trl.eval.UnlearningEvalCallback`]'s. To keep the
    checkpoint that knows the most of the retain set:

    ```python
    >>> args = NPOConfig(..., eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
    ...                  metric_for_best_model="muse/knowmem_retain", greater_is_better=True)
    >>> eval_sets = muse_eval_sets("news")
    >>> settings = MUSEEvalSettings(batch_size=4)
    >>> stats = compute_reference_stats(retrain_model, tokenizer, eval_sets, settings, cache_path="retrain_stats.json")
    >>> trainer = NPOTrainer(model, args=args, train_dataset=forget, eval_dataset=forget, processing_class=tokenizer,
    ...                      callbacks=[MUSECallback(tokenizer, eval_sets, reference_stats=stats, settings=settings)])
    ```

    `muse/verbmem_forget`, `muse/knowmem_forget` and `muse/abs_privleak` are better when lower
    (`greater_is_better=False`); `muse/privleak` and the AUCs cannot select a checkpoint (their best value is the
    retrain model's).

    Parameters:
        processing_class ([`~transformers.PreTrainedTokenizerBase`]):
            The trainer's tokenizer.
        eval_sets (`dict[str, Dataset | list[dict]]`):
            MUSE's evaluation sets by name, e.g. `npo_trl.muse.muse_eval_sets("news")`; see
            [`~npo_trl.muse.MUSEEvaluator`].
        reference_stats (`dict`, `str` or `None`, *optional*):
            The retrain model's AUCs from [`~npo_trl.muse.compute_reference_stats`] (or its JSON file). Without them
            `muse/privleak` is not computed (`null` in the JSONL).
        settings ([`~npo_trl.muse.MUSEEvalSettings`] or `None`, *optional*):
            Batch size, generation lengths, the KnowMem prompt's trailing space, the PrivLeak texts' length limit and
            the Min-K% fraction; `None` takes its defaults. `reference_stats` must have been computed under the same
            PrivLeak settings.
        eval_steps (`"epoch"`, `int` or `None`, *optional*, defaults to `"epoch"`):
            Evaluate at the end of each epoch, every `eval_steps` optimizer steps, or (`None`) only when the trainer
            evaluates.
        eval_on_start (`bool`, *optional*, defaults to `True`):
            Evaluate at the start of training (step 0).
    """

    def __init__(self, processing_class, eval_sets, reference_stats=None, settings: MUSEEvalSettings | None = None,
                 eval_steps="epoch", eval_on_start=True):
        super().__init__(MUSEEvaluator(processing_class, eval_sets, reference_stats, settings), eval_steps,
                         eval_on_start)
