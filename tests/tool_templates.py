"""Minimal chat templates of each tool-calling family, written for the tests (tiny models carry them).

Each renders ``tools=``, past calls and tool results the way its family does, with the bundled
tokenizer's ``<|im_end|>`` as the end of a turn (so the tiny models stop on it).
"""

HERMES = (
    "{% if tools %}{{ '<|im_start|>system\\n# Tools\\n<tools>' }}{% for tool in tools %}"
    "{{ '\\n' + tool | tojson }}{% endfor %}"
    "{{ '\\n</tools>\\nCall with <tool_call></tool_call><|im_end|>\\n' }}{% endif %}"
    "{% for message in messages %}"
    "{% if message.role == 'tool' %}"
    "{{ '<|im_start|>user\\n<tool_response>\\n' + message.content + '\\n</tool_response><|im_end|>\\n' }}"
    "{% elif message.tool_calls %}{{ '<|im_start|>assistant' }}{% for call in message.tool_calls %}"
    '{{ \'\\n<tool_call>\\n{"name": "\' + call.function.name + \'", "arguments": \' }}'
    "{{ call.function.arguments | tojson }}{{ '}\\n</tool_call>' }}{% endfor %}{{ '<|im_end|>\\n' }}"
    "{% else %}{{ '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

LLAMA3 = (
    "{% for m in messages %}"
    "{% if m.role == 'tool' %}<|start_header_id|>ipython<|end_header_id|>\n\n{{ m.content }}<|im_end|>"
    "{% elif m.tool_calls %}<|start_header_id|>assistant<|end_header_id|>\n\n"
    '{% for c in m.tool_calls %}{% if not loop.first %}; {% endif %}{"name": "{{ c.function.name }}", '
    '"parameters": {{ c.function.arguments | tojson }}}{% endfor %}<|im_end|>'
    "{% else %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n"
    "{% if tools and loop.first %}Respond with a JSON function call in the format "
    '{"name": function name, "parameters": dictionary of argument name and its value}.'
    "{% for t in tools %}\n{{ t | tojson }}{% endfor %}\n\n{% endif %}{{ m.content }}<|im_end|>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

MISTRAL = (
    "{% for m in messages %}"
    "{% if m.role == 'user' %}{% if tools and loop.first %}[AVAILABLE_TOOLS]{{ tools | tojson }}"
    "[/AVAILABLE_TOOLS]{% endif %}[INST]{{ m.content }}[/INST]"
    "{% elif m.tool_calls %}[TOOL_CALLS]{{ m.tool_calls | map(attribute='function') | list | tojson }}<|im_end|>"
    "{% elif m.role == 'tool' %}[TOOL_RESULTS]{{ m.content }}[/TOOL_RESULTS]"
    "{% else %}{{ m.content }}<|im_end|>{% endif %}{% endfor %}"
)

QWEN3_XML = (
    "{% if tools %}<|im_start|>system\n# Tools\n<tools>{% for t in tools %}{{ '\\n' + t | tojson }}{% endfor %}"
    "\n</tools>\nCall a function with <tool_call>\n<function=name>\n<parameter=arg>\nvalue\n</parameter>\n"
    "</function>\n</tool_call><|im_end|>\n{% endif %}"
    "{% for m in messages %}"
    "{% if m.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m.content }}\n</tool_response><|im_end|>\n"
    "{% elif m.tool_calls %}<|im_start|>assistant{% for c in m.tool_calls %}{{ '\\n<tool_call>\\n' }}"
    "<function={{ c.function.name }}>{% for k, v in c.function.arguments.items() %}{{ '\\n' }}<parameter={{ k }}>"
    "{{ '\\n' }}{{ v if v is string else v | tojson }}{{ '\\n' }}</parameter>{% endfor %}{{ '\\n' }}</function>"
    "{{ '\\n' }}</tool_call>{% endfor %}<|im_end|>{{ '\\n' }}"
    "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

FAMILIES = {"hermes": HERMES, "llama3": LLAMA3, "mistral": MISTRAL, "qwen3": QWEN3_XML}
