{#
    Use a model's custom schema as it is (`staging`, `marts`) instead of dbt's `<target>_<custom>`:
    the DuckDB file is published to analysts, who should see plain layer names.
#}
{% macro generate_schema_name(custom_schema_name, node) -%}
{%- if custom_schema_name is none -%}
{{ target.schema }}
{%- else -%}
{{ custom_schema_name | trim }}
{%- endif -%}
{%- endmacro %}
