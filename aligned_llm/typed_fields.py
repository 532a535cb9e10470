"""The registry's settings as typed pydantic fields, for the integrations built on pydantic models.

LangChain's ``ChatAlignedLLM``/``AlignedLLMText`` and LlamaIndex's ``AlignedHF`` hold a field per
setting. Each field is declared from :func:`aligned_llm.registry.setting_fields`: its type and
range (so IDEs, ``model_json_schema()`` and ``configurable_fields`` see them), its help, and a
validator that asks the core first, so a bad value is refused with the core's message naming
the setting. Fields for methods registered later are added when they register.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field
from pydantic.fields import FieldInfo
from pydantic.json_schema import DEFAULT_REF_TEMPLATE, GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue
from pydantic_core import PydanticOmit, core_schema

from aligned_llm.registry import SettingField, on_register
from aligned_llm.settings import check_setting


def setting_field(
    setting: SettingField, *, default: Any = None, description: str | None = None
) -> tuple[Any, FieldInfo]:
    """The annotation and ``FieldInfo`` of one setting; ``default`` ``None`` means "the library's default".

    A field defaulting to ``None`` is optional (``None`` lets the core choose); one holding a
    value (``default``) is not. The core checks every value first (its message names the
    setting), then pydantic holds the value to the declared type and range.
    """

    def check(value: Any) -> Any:
        return value if value is None else check_setting(setting.name, value)

    value_type: Any = Annotated[setting.value_type, Field(**setting.bounds)] if setting.bounds else setting.value_type
    annotation: Any = Annotated[value_type if default is not None else value_type | None, BeforeValidator(check)]
    return annotation, FieldInfo(default=default, description=description or setting.description)


FieldsFor = Callable[[], Mapping[str, tuple[Any, FieldInfo]]]
"""A class's setting fields, by field name, from the registry as it stands (called again as methods register)."""


def keep_setting_fields(cls: type[BaseModel], fields: FieldsFor) -> None:
    """Give ``cls`` (and its subclasses) ``fields()`` now, and the new ones each time a method registers."""
    add_setting_fields(cls, fields)
    on_register(lambda _method: add_setting_fields(cls, fields))


def add_setting_fields(cls: type[BaseModel], fields: FieldsFor) -> None:
    """Add the fields ``cls`` and its subclasses lack, then rebuild them."""
    declared = fields()
    for model in _with_subclasses(cls):
        missing = [name for name in declared if name not in model.__pydantic_fields__]
        for name in missing:
            annotation, info = declared[name]
            model.__pydantic_fields__[name] = FieldInfo.from_annotated_attribute(annotation, info)
            model.__annotations__[name] = annotation  # so subclasses created later inherit the field
        if missing:
            model.model_rebuild(force=True)


def _with_subclasses(cls: type[BaseModel]) -> Iterable[type[BaseModel]]:
    classes = [cls]
    for known in classes:
        classes.extend(sub for sub in known.__subclasses__() if sub not in classes)
    return classes


class SkipUnrepresentable(GenerateJsonSchema):
    """A JSON schema that leaves out what JSON cannot describe (callables, loaded models) instead of failing.

    The frameworks' model classes hold such fields (callbacks, a rate limiter, the loaded
    model); the settings around them still deserve a schema.
    """

    def handle_invalid_for_json_schema(self, schema: core_schema.CoreSchema, error_info: str) -> JsonSchemaValue:
        """Omit the field (or the member of a union) pydantic cannot describe."""
        raise PydanticOmit


class SchemaOfSettings(BaseModel):
    """Base for a framework model with setting fields: ``model_json_schema()`` shows them, typed, with their ranges.

    Listed before the framework's base class, so that its callables and the loaded model are
    left out of the schema (:class:`SkipUnrepresentable`) rather than making it fail.
    """

    @classmethod
    def model_json_schema(
        cls,
        by_alias: bool = True,
        ref_template: str = DEFAULT_REF_TEMPLATE,
        schema_generator: type[GenerateJsonSchema] = SkipUnrepresentable,
        mode: JsonSchemaMode = "validation",
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The fields' JSON schema: settings typed, with their ranges; what JSON cannot describe left out."""
        return super().model_json_schema(by_alias, ref_template, schema_generator, mode, **kwargs)
