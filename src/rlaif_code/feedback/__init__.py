"""AI feedback: judge sampled answers against a rubric of yes/no questions, then label them.

`rlaif feedback` (`FeedbackConfig`, `run`): see `rlaif_code.feedback.stage` for inputs,
outputs and resuming; `rubric` for the rubric format, the default rubric, the score
and the threshold; `judges` for the LLM judges (`openai`, `hf`, `tools`) and their
options; `tools` for the tool checks; `cache` for the answer cache.
`rlaif judge-check` (`rlaif_code.feedback.judge_check`): how far a judge agrees with
the tools on the questions tools can verify.
"""

from rlaif_code.feedback.stage import FeedbackConfig, run, run_from_cli

__all__ = ["FeedbackConfig", "run", "run_from_cli"]
