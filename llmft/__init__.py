"""llmft: fine-tune small language models with LoRA and measure, honestly, whether it helped."""

from .errors import LlmftError
from .tasks import TaskSpec, get_task, register_task, task_names

__version__ = "0.1.0"
__all__ = ["LlmftError", "TaskSpec", "get_task", "register_task", "task_names", "__version__"]
