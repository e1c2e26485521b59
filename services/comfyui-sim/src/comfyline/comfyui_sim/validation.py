"""`POST /prompt` validation, following ComfyUI's `execution.validate_prompt` line by line.

It is deliberately written in the same shape as the original (same recursion, same memo, same
order of checks, plain Python indexing on the posted JSON), so that odd graphs fail with the very
error types, messages and `node_errors` the real server gives, including its quirks:
`node_errors` only lists nodes that carry reasons, an exception in an upstream node is attached
to that upstream node as `exception_during_inner_validation`, and `dependent_outputs` collects
every failing output seen so far.
"""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass
from typing import Any

from comfyline.comfyui_sim.config import Release
from comfyline.comfyui_sim.nodes import NodeRegistry
from comfyline.comfyui_sim.nodes.base import Node

Error = dict[str, Any]
BAD_LINK = "Bad linked input, must be a length-2 list of [node_id, slot_index]"


def error(kind: str, message: str, details: str, **extra_info: Any) -> Error:
    """One entry of ComfyUI's error lists: `{type, message, details, extra_info}`."""
    return {"type": kind, "message": message, "details": details, "extra_info": extra_info}


def _exception_info(ex: Exception) -> tuple[str, list[str]]:
    typ, _, tb = sys.exc_info()
    return full_type_name(typ or type(ex)), traceback.format_tb(tb)


Result = tuple[bool, list[Error], Any]


@dataclass(frozen=True)
class Verdict:
    """What `validate_prompt` decided: outputs to run, the top error, per-node errors."""

    ok: bool
    error: Error | None
    outputs: list[str]
    node_errors: dict[str, Any]


def full_type_name(klass: type) -> str:
    module = klass.__module__
    if module == "builtins":
        return klass.__qualname__
    return f"{module}.{klass.__qualname__}"


def validate_node_input(received_type: Any, input_type: Any) -> bool:
    """Type compatibility of a link: equal, `*`, or overlapping `A,B` unions."""
    if not received_type != input_type:
        return True
    if not isinstance(received_type, str) or not isinstance(input_type, str):
        return False
    received = {t.strip() for t in received_type.split(",")}
    wanted = {t.strip() for t in input_type.split(",")}
    if "*" in received or "*" in wanted:
        return True
    return len(received & wanted) > 0


def _input_info(class_inputs: dict[str, Any], name: str) -> tuple[Any, str | None, dict[str, Any]]:
    for category in ("required", "optional", "hidden"):
        group = class_inputs.get(category)
        if group is not None and name in group:
            info = group[name]
            if isinstance(info, str):
                return info, category, {}
            return info[0], category, (info[1] if len(info) > 1 else {})
    return None, None, {}


class Validator:
    """Validates one posted graph against a registry's node classes."""

    def __init__(self, registry: NodeRegistry, release: Release) -> None:
        self.registry = registry
        self.release = release

    def _class(self, class_type: Any) -> type[Node]:
        cls = self.registry.get(class_type)
        if cls is None:
            raise KeyError(class_type)
        return cls

    def validate_inputs(self, prompt: Any, item: Any, validated: dict[Any, Result]) -> Result:
        unique_id = item
        if unique_id in validated:
            return validated[unique_id]
        inputs = prompt[unique_id]["inputs"]
        class_type = prompt[unique_id]["class_type"]
        obj_class = self._class(class_type)
        class_inputs = obj_class.input_types(self.registry.env)
        valid_inputs = list(class_inputs.get("required", {})) + [
            name
            for name in class_inputs.get("optional", {})
            if name not in class_inputs.get("required", {})
        ]
        errors: list[Error] = []
        valid = True
        validate_inputs = obj_class.VALIDATES
        for x in valid_inputs:
            input_type, category, extra_info = _input_info(class_inputs, x)
            if x not in inputs:
                if category == "required":
                    errors.append(
                        error(
                            "required_input_missing", "Required input is missing", x, input_name=x
                        )
                    )
                continue
            val = inputs[x]
            info = [input_type, extra_info]
            if isinstance(val, list):
                if len(val) != 2:
                    errors.append(
                        error("bad_linked_input", BAD_LINK, x, input_name=x, input_config=info,
                              received_value=val)
                    )  # fmt: skip
                    continue
                o_id = val[0]
                o_class_type = prompt[o_id]["class_type"]
                received_type = self._class(o_class_type).RETURN_TYPES[val[1]]
                if not validate_node_input(received_type, input_type):
                    details = (
                        f"{x}, received_type({received_type}) mismatch input_type({input_type})"
                    )
                    errors.append(
                        error("return_type_mismatch", "Return type mismatch between linked nodes",
                              details, input_name=x, input_config=info,
                              received_type=received_type, linked_node=val)
                    )  # fmt: skip
                    continue
                try:
                    r = self.validate_inputs(prompt, o_id, validated)
                    if r[0] is False:
                        valid = False
                        continue
                except Exception as ex:
                    valid = False
                    kind, tb = _exception_info(ex)
                    reason = error("exception_during_inner_validation",
                                   "Exception when validating inner node", str(ex),
                                   input_name=x, input_config=info, exception_message=str(ex),
                                   exception_type=kind, traceback=tb, linked_node=val)  # fmt: skip
                    validated[o_id] = (False, [reason], o_id)
                    continue
            else:
                try:
                    if isinstance(val, dict) and "__value__" in val:
                        val = val["__value__"]
                        inputs[x] = val
                    if input_type == "INT":
                        val = int(val)
                        inputs[x] = val
                    if input_type == "FLOAT":
                        val = float(val)
                        inputs[x] = val
                    if input_type == "STRING":
                        val = str(val)
                        inputs[x] = val
                    if input_type == "BOOLEAN":
                        val = bool(val)
                        inputs[x] = val
                except Exception as ex:
                    message = f"Failed to convert an input value to a {input_type} value"
                    errors.append(
                        error("invalid_input_type", message, f"{x}, {val}, {ex}", input_name=x,
                              input_config=info, received_value=val, exception_message=str(ex))
                    )  # fmt: skip
                    continue
                if x not in validate_inputs:
                    problem = self._check_value(x, val, input_type, extra_info, info)
                    if problem is not None:
                        errors.append(problem)
                        continue
        if validate_inputs:
            errors.extend(self._custom_validation(obj_class, inputs, validate_inputs))
        ret: Result = (
            (False, errors, unique_id) if errors or valid is not True else (True, [], unique_id)
        )
        validated[unique_id] = ret
        return ret

    @staticmethod
    def _check_value(
        x: str, val: Any, input_type: Any, extra_info: dict[str, Any], info: list[Any]
    ) -> Error | None:
        if "min" in extra_info and val < extra_info["min"]:
            message = "Value {} smaller than min of {}".format(val, extra_info["min"])
            return error("value_smaller_than_min", message, x, input_name=x, input_config=info,
                         received_value=val)  # fmt: skip
        if "max" in extra_info and val > extra_info["max"]:
            message = "Value {} bigger than max of {}".format(val, extra_info["max"])
            return error("value_bigger_than_max", message, x, input_name=x, input_config=info,
                         received_value=val)  # fmt: skip
        if isinstance(input_type, list) or input_type == "COMBO":
            options = extra_info.get("options", []) if input_type == "COMBO" else input_type
            if val not in options:
                input_config: Any = info
                if len(options) > 20:
                    list_info = f"(list of length {len(options)})"
                    input_config = None
                else:
                    list_info = str(options)
                return error("value_not_in_list", "Value not in list",
                             f"{x}: '{val}' not in {list_info}", input_name=x,
                             input_config=input_config, received_value=val)  # fmt: skip
        return None

    def _custom_validation(
        self, obj_class: type[Node], inputs: dict[str, Any], names: tuple[str, ...]
    ) -> list[Error]:
        values: dict[str, Any] = {}
        for name in names:
            if name not in inputs:
                raise TypeError(
                    f"{obj_class.CLASS}.VALIDATE_INPUTS() missing 1 required positional "
                    f"argument: '{name}'"
                )
            value = inputs[name]
            values[name] = None if isinstance(value, list) else value
        r = obj_class.validate(self.registry.env, values)
        errors: list[Error] = []
        if r is not True:
            for x in values:
                details = f"{x}" if r is False else f"{x} - {r}"
                message = "Custom validation failed for node"
                errors.append(error("custom_validation_failed", message, details, input_name=x))
        return errors

    def _missing_class(self, node_id: Any, node: Any) -> Error:
        has_class = "class_type" in node
        class_type = node["class_type"] if has_class else None
        if not self.release.is_newer:
            message = (
                f"Cannot execute because node {class_type} does not exist."
                if has_class
                else "Cannot execute because a node is missing the class_type property."
            )
            return error("invalid_prompt", message, f"Node ID '#{node_id}'")
        title = node.get("_meta", {}).get("title") if isinstance(node, dict) else None
        if has_class:
            message = (
                f"Node '{title or class_type}' not found. The custom node may not be installed."
            )
        else:
            message = (
                f"Node '{title or f'ID #{node_id}'}' has no class_type. The workflow may be "
                "corrupted or a custom node is missing."
            )
        node_title = title or class_type if has_class else title
        return error("missing_node_type", message, f"Node ID '#{node_id}'", node_id=node_id,
                     class_type=class_type, node_title=node_title)  # fmt: skip

    def validate_prompt(self, prompt: Any, partial_execution_list: Any = None) -> Verdict:
        outputs: list[Any] = []
        for x in prompt:
            if "class_type" not in prompt[x]:
                return Verdict(False, self._missing_class(x, prompt[x]), [], {})
            class_ = self.registry.get(prompt[x]["class_type"])
            if class_ is None:
                return Verdict(False, self._missing_class(x, prompt[x]), [], {})
            if class_.OUTPUT_NODE is True:
                if partial_execution_list is None or x in partial_execution_list:
                    outputs.append(x)
        if not outputs:
            return Verdict(False, error("prompt_no_outputs", "Prompt has no outputs", ""), [], {})

        good_outputs: list[Any] = []
        errors: list[tuple[Any, list[Error]]] = []
        node_errors: dict[Any, Any] = {}
        validated: dict[Any, Result] = {}
        for o in outputs:
            valid = False
            reasons: list[Error] = []
            try:
                m = self.validate_inputs(prompt, o, validated)
                valid, reasons = m[0], m[1]
            except Exception as ex:
                valid = False
                kind, tb = _exception_info(ex)
                reasons = [error("exception_during_validation", "Exception when validating node",
                                 str(ex), exception_type=kind, traceback=tb)]  # fmt: skip
                validated[o] = (False, reasons, o)
            if valid is True:
                good_outputs.append(o)
                continue
            errors.append((o, reasons))
            for node_id, result in validated.items():
                if result[0] is not True and len(result[1]) > 0:
                    if node_id not in node_errors:
                        node_errors[node_id] = {
                            "errors": result[1],
                            "dependent_outputs": [],
                            "class_type": prompt[node_id]["class_type"],
                        }
                    node_errors[node_id]["dependent_outputs"].append(o)

        if not good_outputs:
            details = "\n".join(
                f"{reason['message']}: {reason['details']}"
                for _, reasons in errors
                for reason in reasons
            )
            top = error(
                "prompt_outputs_failed_validation", "Prompt outputs failed validation", details
            )
            return Verdict(False, top, [], node_errors)
        return Verdict(True, None, good_outputs, node_errors)
