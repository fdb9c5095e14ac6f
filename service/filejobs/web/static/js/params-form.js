// The processors and the params form built from each one's JSON Schema.

import { ApiError, apiJson, errorText } from './api.js';
import { h } from './dom.js';
import { inlineMarkdown } from './markdown.js';
import { state, ui } from './state.js';

export const PROCESSOR_STORAGE = 'filejobs.processor';

function lookupRef(root, ref) {
  if (typeof ref !== 'string' || !ref.startsWith('#/')) return {};
  let node = root;
  for (const raw of ref.slice(2).split('/')) {
    const part = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    node = node && typeof node === 'object' ? node[part] : undefined;
  }
  return node && typeof node === 'object' ? node : {};
}

/** Follow $ref and single-member allOf; sibling keywords (default, description) win. */
function resolveSchema(schema, root, depth = 0) {
  if (!schema || typeof schema !== 'object' || depth > 20) return {};
  if (schema.$ref) {
    const { $ref, ...rest } = schema;
    return { ...resolveSchema(lookupRef(root, $ref), root, depth + 1), ...rest };
  }
  if (Array.isArray(schema.allOf) && schema.allOf.length === 1) {
    const { allOf, ...rest } = schema;
    return { ...resolveSchema(allOf[0], root, depth + 1), ...rest };
  }
  return schema;
}

function describeField(name, raw, root, required) {
  const outer = resolveSchema(raw, root);
  let schema = outer;
  let nullable = false;
  const union = outer.anyOf || outer.oneOf;
  if (Array.isArray(union)) {
    const options = union.map((option) => resolveSchema(option, root));
    const concrete = options.filter((option) => option.type !== 'null');
    nullable = concrete.length < options.length;
    const { anyOf, oneOf, ...rest } = outer;
    schema = concrete.length === 1 ? { ...concrete[0], ...rest } : { ...rest, type: undefined };
  }
  if (Array.isArray(schema.type)) {
    const types = schema.type.filter((type) => type !== 'null');
    nullable = nullable || types.length < schema.type.length;
    schema = { ...schema, type: types.length === 1 ? types[0] : undefined };
  }
  let choices = null;
  if (Array.isArray(schema.enum)) choices = schema.enum;
  else if ('const' in schema) choices = [schema.const];
  if (choices && choices.includes(null)) {
    nullable = true;
    choices = choices.filter((choice) => choice !== null);
  }
  let kind = 'json';
  if (choices) kind = 'enum';
  else if (schema.type === 'boolean') kind = nullable ? 'tristate' : 'boolean';
  else if (schema.type === 'integer') kind = 'integer';
  else if (schema.type === 'number') kind = 'number';
  else if (schema.type === 'string') kind = 'string';
  const hasDefault = 'default' in schema;
  return {
    name,
    kind,
    schema,
    choices,
    nullable,
    required,
    hasDefault,
    default: schema.default,
    title: schema.title || name,
    description: typeof schema.description === 'string' ? schema.description : '',
  };
}

function fieldHint(field) {
  const parts = [];
  if (field.description) parts.push(field.description);
  const { schema } = field;
  const min = schema.minimum ?? schema.exclusiveMinimum;
  const max = schema.maximum ?? schema.exclusiveMaximum;
  if ((field.kind === 'integer' || field.kind === 'number') && (min !== undefined || max !== undefined)) {
    if (min !== undefined && max !== undefined) parts.push(`From ${min} to ${max}.`);
    else if (min !== undefined) parts.push(`At least ${min}.`);
    else parts.push(`At most ${max}.`);
  }
  if (field.kind === 'string' && schema.maxLength !== undefined) {
    const { minLength, maxLength } = schema;
    if (minLength && minLength === maxLength)
      parts.push(`Exactly ${maxLength} ${maxLength === 1 ? 'character' : 'characters'}.`);
    else if (minLength) parts.push(`${minLength} to ${maxLength} characters.`);
    else parts.push(`Up to ${maxLength} characters.`);
  }
  if (
    field.hasDefault &&
    field.default !== null &&
    field.kind !== 'boolean' &&
    schema.format !== 'password'
  ) {
    parts.push(
      `Default: ${typeof field.default === 'string' ? field.default : JSON.stringify(field.default)}.`,
    );
  } else if (field.nullable && !field.required) {
    parts.push('Optional.');
  }
  return parts.join(' ');
}

function safeId(name) {
  return `param-${String(name).replace(/[^A-Za-z0-9_-]/g, '_')}`;
}

function renderField(field) {
  const id = safeId(field.name);
  const hint = fieldHint(field);
  const hintId = `${id}-hint`;
  const labelText = field.required ? `${field.title} (required)` : field.title;
  const label = h('label', { for: id }, labelText);
  let input;
  const { schema } = field;

  if (field.kind === 'boolean') {
    input = h('input', { type: 'checkbox', id, name: field.name });
    input.checked = field.default === true;
  } else if (field.kind === 'tristate' || field.kind === 'enum') {
    input = h('select', { id, name: field.name });
    const options =
      field.kind === 'tristate'
        ? [
            ['', 'Default (automatic)'],
            ['true', 'Yes'],
            ['false', 'No'],
          ]
        : field.choices.map((choice, index) => [String(index), String(choice)]);
    if (field.kind === 'enum' && (!field.hasDefault || field.default === null) && !field.required) {
      options.unshift(['', 'Default']);
    }
    for (const [value, text] of options) input.append(h('option', { value }, text));
    if (field.kind === 'tristate') {
      input.value = field.default === true ? 'true' : field.default === false ? 'false' : '';
    } else if (field.hasDefault && field.default !== null) {
      const index = field.choices.findIndex((choice) => choice === field.default);
      if (index >= 0) input.value = String(index);
    }
  } else if (field.kind === 'integer' || field.kind === 'number') {
    input = h('input', {
      type: 'number',
      id,
      name: field.name,
      inputmode: field.kind === 'integer' ? 'numeric' : 'decimal',
    });
    input.step = schema.multipleOf ? String(schema.multipleOf) : field.kind === 'integer' ? '1' : 'any';
    const min =
      schema.minimum ??
      (schema.exclusiveMinimum !== undefined && field.kind === 'integer'
        ? schema.exclusiveMinimum + 1
        : schema.exclusiveMinimum);
    const max =
      schema.maximum ??
      (schema.exclusiveMaximum !== undefined && field.kind === 'integer'
        ? schema.exclusiveMaximum - 1
        : schema.exclusiveMaximum);
    if (min !== undefined) input.min = String(min);
    if (max !== undefined) input.max = String(max);
    if (field.hasDefault && typeof field.default === 'number') input.value = String(field.default);
  } else if (field.kind === 'string') {
    const secret = schema.format === 'password' || schema.writeOnly === true;
    input = h('input', {
      type: secret ? 'password' : 'text',
      id,
      name: field.name,
      autocomplete: secret ? 'new-password' : 'off',
      spellcheck: 'false',
    });
    if (schema.maxLength !== undefined) input.maxLength = schema.maxLength;
    if (schema.minLength !== undefined) input.minLength = schema.minLength;
    if (field.hasDefault && typeof field.default === 'string' && !secret) input.value = field.default;
  } else {
    input = h('textarea', { id, name: field.name, rows: '2', spellcheck: 'false', placeholder: 'JSON' });
    if (field.hasDefault && field.default !== null && field.default !== undefined)
      input.value = JSON.stringify(field.default);
  }
  input.dataset.testid = id;
  if (field.required) input.required = true;
  if (hint) input.setAttribute('aria-describedby', hintId);
  const wrap = h('div', {
    class: field.kind === 'boolean' ? 'field field-check' : 'field',
    'data-param': field.name,
  });
  if (field.kind === 'boolean') wrap.append(input, label);
  else wrap.append(label, input);
  if (hint) wrap.append(h('p', { class: 'hint', id: hintId }, inlineMarkdown(hint)));
  return { field, input, wrap };
}

export function renderParams() {
  const processor = state.processors.find((item) => item.name === ui.processor.value);
  ui.paramsFields.replaceChildren();
  state.fields = [];
  if (!processor) {
    ui.processorDescription.textContent = '';
    ui.params.hidden = true;
    ui.fileInput.removeAttribute('accept');
    return;
  }
  const accepts = Array.isArray(processor.accepts) ? processor.accepts : [];
  ui.processorDescription.replaceChildren(
    ...inlineMarkdown(processor.description),
    accepts.length ? ` Accepts ${accepts.join(', ')}.` : '',
  );
  if (accepts.length) ui.fileInput.accept = accepts.join(',');
  else ui.fileInput.removeAttribute('accept');
  const schema =
    processor.params_schema && typeof processor.params_schema === 'object' ? processor.params_schema : {};
  const root = resolveSchema(schema, schema);
  const properties = root.properties && typeof root.properties === 'object' ? root.properties : {};
  const required = new Set(Array.isArray(root.required) ? root.required : []);
  for (const [name, raw] of Object.entries(properties)) {
    const rendered = renderField(describeField(name, raw, schema, required.has(name)));
    state.fields.push(rendered);
    ui.paramsFields.append(rendered.wrap);
  }
  if (!state.fields.length) {
    ui.paramsFields.append(h('p', { class: 'hint' }, 'This processor takes no parameters.'));
  }
  ui.params.hidden = false;
}

/** The params object from the form, or null after reporting what is wrong. */
export function collectParams() {
  const params = {};
  for (const { field, input } of state.fields) {
    input.setCustomValidity('');
    const raw = input.type === 'checkbox' ? input.checked : input.value;
    switch (field.kind) {
      case 'boolean':
        params[field.name] = raw;
        break;
      case 'tristate':
        if (raw !== '') params[field.name] = raw === 'true';
        break;
      case 'enum':
        if (raw !== '') params[field.name] = field.choices[Number(raw)];
        break;
      case 'integer':
      case 'number':
        if (raw !== '') {
          const number = Number(raw);
          if (!Number.isFinite(number) || (field.kind === 'integer' && !Number.isInteger(number))) {
            input.setCustomValidity(field.kind === 'integer' ? 'Enter a whole number.' : 'Enter a number.');
          } else params[field.name] = number;
        }
        break;
      case 'string':
        if (raw !== '' || field.required) params[field.name] = raw;
        break;
      default:
        if (raw.trim() !== '') {
          try {
            params[field.name] = JSON.parse(raw);
          } catch {
            input.setCustomValidity('Enter valid JSON.');
          }
        }
    }
  }
  for (const { input } of state.fields) {
    if (!input.checkValidity()) {
      input.reportValidity();
      input.focus();
      return null;
    }
  }
  return params;
}

export async function loadProcessors() {
  try {
    const body = await apiJson('/v1/processors');
    state.processors = Array.isArray(body.items) ? body.items : [];
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return;
    ui.processorDescription.textContent = `Could not load the processors: ${errorText(error)}`;
    return;
  }
  let remembered = '';
  try {
    remembered = sessionStorage.getItem(PROCESSOR_STORAGE) || '';
  } catch {
    remembered = '';
  }
  const previous = ui.processor.value || remembered || 'inspect';
  ui.processor.replaceChildren(
    ...state.processors.map((item) => h('option', { value: item.name }, item.name)),
  );
  if (state.processors.some((item) => item.name === previous)) ui.processor.value = previous;
  renderParams();
}
