"""lm-eval's tasks: importing lm-eval (an optional extra), the task index that resolves a task list (registry names,
local task files, task config dicts) with a clear error for a name it does not know, and the config of a local
four-choice task scored as continuations."""

import functools
import os

EXTRA_HINT = "pip install 'npo-trl[lm-eval]'"
# How a local four-choice task asks its question; each choice is scored as its continuation after one space (lm-eval's
# default `target_delimiter`). `npo_trl.wmdp.synthetic.qa_text` writes its training documents the same way.
QUESTION_TEMPLATE = "Question: {{question.strip()}}\nAnswer:"


def import_lm_eval():
    """The `lm_eval` module, or an ImportError naming the extra that installs it."""
    try:
        import lm_eval
        import lm_eval.models.huggingface  # noqa: F401  (HFLM needs the `hf` extra's libraries)
    except ImportError as error:
        raise ImportError(f"lm-evaluation-harness is not installed ({error}): {EXTRA_HINT}") from error
    return lm_eval


def task_name(spec) -> str:
    """The name lm-eval reports a task under: a registry or file name as given, a config dict's `task` (or `group`)."""
    if isinstance(spec, dict):
        name = spec.get("task", spec.get("group"))
        if not isinstance(name, str):
            raise ValueError(f"A task config dict needs a 'task' name (or a 'group' name), got the keys "
                             f"{sorted(spec)}: e.g. npo_trl.lm_eval.multiple_choice_task(name, data_file).")
        return name
    if isinstance(spec, str):
        return spec
    raise ValueError(f"tasks holds {spec!r}: give task names (str) or task config dicts.")


def task_manager(tasks, include_path=None):
    """lm-eval's `TaskManager` that resolves every task of `tasks`: its index of `include_path` (a folder or a list of
    folders of task YAML files) alone when that holds every named task, lm-eval's own tasks too otherwise (indexing
    those takes seconds). A name found in neither raises a ValueError naming it and how to list the tasks or pass a
    local one."""
    if not tasks:
        raise ValueError("tasks is empty: name lm-eval tasks (e.g. 'wmdp_bio', 'mmlu') or give task config dicts.")
    names = [spec for spec in tasks if not isinstance(spec, dict)]
    for spec in tasks:
        task_name(spec)
    paths = [include_path] if isinstance(include_path, (str, os.PathLike)) else list(include_path or [])
    for path in paths:
        if not os.path.isdir(path):
            raise ValueError(f"include_path={str(path)!r} is not a folder: give the folder of the local task YAML "
                             "files.")
    import_lm_eval()
    paths = tuple(os.path.abspath(p) for p in paths)
    manager = indexed_tasks(paths, include_defaults=not paths and bool(names))
    if any(name not in manager.all_tasks for name in names) and paths:
        manager = indexed_tasks(paths, include_defaults=True)
    unknown = [name for name in names if name not in manager.all_tasks]
    if unknown:
        where = f" or in include_path={list(paths)}" if paths else ""
        raise ValueError(f"lm-eval has no task {unknown[0]!r} among its own tasks{where}: list them with "
                         "`lm-eval ls tasks`, or pass a local task as a YAML file in a folder given as include_path "
                         "(`--include_path`), or as a task config dict (npo_trl.lm_eval.multiple_choice_task).")
    return manager


@functools.lru_cache(maxsize=8)
def indexed_tasks(include_paths: tuple[str, ...], include_defaults: bool):
    """lm-eval's `TaskManager` over the task files of `include_paths`, and of lm-eval's own tasks when
    `include_defaults`; built once per process (it holds an index of file names; each evaluation builds its tasks
    anew)."""
    import_lm_eval()
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(include_paths) or None, include_defaults=include_defaults)


def multiple_choice_task(name: str, data_file, split: str = "test") -> dict:
    """lm-eval's config of a local four-choice task over `data_file` (JSON or JSON Lines rows in cais/wmdp's schema:
    `question`, `choices` (strings), `answer` (the correct choice's index)): each choice is scored as a continuation of
    `"Question: <question>\\nAnswer:"` (the sum of its tokens' log-probabilities), as lm-eval's cloze variants of MMLU
    score them, and `acc` is the fraction of questions whose correct choice scores highest (`acc_norm` divides each
    score by the choice's length in characters first). The hub's `wmdp_bio` asks for a letter instead ("Answer: A"),
    which a small model cannot follow."""
    return {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {split: os.path.abspath(data_file)}},
        "test_split": split,
        "output_type": "multiple_choice",
        "doc_to_text": QUESTION_TEMPLATE,
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "answer",
        "num_fewshot": 0,
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                        {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1},
    }
