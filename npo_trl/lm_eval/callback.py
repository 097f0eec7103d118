"""`LMEvalCallback`: lm-evaluation-harness's metrics during training (an `UnlearningEvalCallback` with an
`LMEvalEvaluator`)."""

from ..eval.callback import UnlearningEvalCallback
from .evaluator import DEFAULT_METRICS, LMEvalEvaluator


class LMEvalCallback(UnlearningEvalCallback):
    r"""
    Evaluates lm-eval tasks (e.g. WMDP's and MMLU's accuracy) before training and at each evaluation point, on every
    process (each evaluates every row: see [`~npo_trl.lm_eval.LMEvalEvaluator`]; DDP and DeepSpeed ZeRO-3 work). The
    metrics (`lm_eval/<task>/acc`, `lm_eval/<task>/acc_norm`, ...) are logged through the trainer and appended to
    `output_dir/lm_eval_metrics.jsonl`; evaluation points, logging and best-model selection are
    [`~npo_trl.eval.UnlearningEvalCallback`]'s. On the offline WMDP stand-in:

    ```python
    >>> standin = write_synthetic_wmdp("data/wmdp")
    >>> callback = LMEvalCallback(standin.tasks, tokenizer, eval_steps=50)
    >>> trainer = NPOTrainer(model, args=args, train_dataset=forget, processing_class=tokenizer, callbacks=[callback])
    ```

    Parameters:
        tasks (`list[str | dict]`):
            lm-eval task names (`"wmdp_bio"`, `"mmlu"`, or tasks in YAML files under `include_path`) or task config
            dicts. See [`~npo_trl.lm_eval.LMEvalEvaluator`].
        processing_class ([`~transformers.PreTrainedTokenizerBase`]):
            The trainer's tokenizer.
        batch_size (`int`, *optional*, defaults to `8`):
            Requests per forward pass.
        include_path (`str`, `list[str]` or `None`, *optional*):
            Folders of local task YAML files.
        metrics (`tuple[str, ...]`, *optional*, defaults to `("acc", "acc_norm")`):
            The lm-eval metrics reported for each task.
        num_fewshot (`int` or `None`, *optional*):
            Few-shot examples per question, over the tasks' own setting.
        limit (`int`, `float` or `None`, *optional*):
            Evaluate only the first `limit` rows of each task.
        eval_steps (`"epoch"`, `int` or `None`, *optional*, defaults to `"epoch"`):
            Evaluate at the end of each epoch, every `eval_steps` optimizer steps, or (`None`) only when the trainer
            evaluates.
        eval_on_start (`bool`, *optional*, defaults to `True`):
            Evaluate at the start of training (step 0).
    """

    def __init__(self, tasks, processing_class, batch_size: int = 8, include_path=None,
                 metrics: tuple[str, ...] = DEFAULT_METRICS, num_fewshot: int | None = None, limit=None,
                 eval_steps="epoch", eval_on_start=True):
        super().__init__(LMEvalEvaluator(tasks, processing_class, batch_size, include_path, metrics, num_fewshot,
                                         limit), eval_steps, eval_on_start)
