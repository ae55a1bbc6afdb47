"""The OpenAI reasoning-model request rules (o1, o3, o4-mini, gpt-5 ...), as a fake server enforces
them: what the real API answers with an HTTP 400 ``invalid_request_error``."""


def reasoning_rule_error(body):
    """The 400 error body the OpenAI API gives a reasoning model's request, or None if accepted:
    ``max_tokens`` (use ``max_completion_tokens``), ``temperature`` / ``top_p`` other than the
    default 1, and ``stop`` / penalties / ``logprobs`` are rejected."""

    def err(param, code, message):
        return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}

    if "max_tokens" in body:
        return err("max_tokens", "unsupported_parameter", "Unsupported parameter: 'max_tokens' is not supported "
                   "with this model. Use 'max_completion_tokens' instead.")
    for k in ("temperature", "top_p"):
        if k in body and body[k] != 1:
            return err(k, "unsupported_value", f"Unsupported value: '{k}' does not support {body[k]} with this "
                       "model. Only the default (1) value is supported.")
    for k in ("stop", "presence_penalty", "frequency_penalty", "logprobs"):
        if k in body:
            return err(k, "unsupported_parameter", f"Unsupported parameter: '{k}' is not supported with this model.")
    return None
