"""The five stages (task analysis → scope → precision → plan → code), their prompts and
output schemas, and the context builder that feeds them."""

from appliance.config import STAGES

__all__ = ["STAGES", "STAGE_ROLES"]

# Which base model role serves each stage.
STAGE_ROLES = {
    "task_analysis": "reasoning",
    "scope": "reasoning",
    "precision": "reasoning",
    "plan": "reasoning",
    "code": "coder",
}
