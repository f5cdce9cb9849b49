// The emulator's BP designer settings dialog (docs/protocol.md §1.8): the parent side of the
// Bitrix24 frame protocol for the app's form, the hidden property inputs it fills, and Save.
//
// The frame posts strings `command:params:callbackKey:appSid` (params JSON or nothing; JSON may
// hold ':'), to this page's origin. The dialog answers `callbackKey:JSON` to the handler's origin
// only, and ignores every message that is not from the frame, from the handler's origin and
// with the dialog's APP_SID.
'use strict';

(function () {
  const root = document.getElementById('designer');
  if (!root) {
    return;
  }
  const config = JSON.parse(root.dataset.config);
  const form = document.getElementById('properties');
  const status = document.getElementById('status');
  const errors = document.getElementById('errors');
  const registered = new Set(config.properties);

  // The inputs of property `id`: `property_<id lower-cased>`, with `[]` for several values.
  function inputsOf(id) {
    const name = 'property_' + id.toLowerCase();
    return Array.from(form.elements).filter(function (el) {
      return el.name === name || el.name === name + '[]';
    });
  }

  // Replaces the hidden inputs of property `id` with `value` (a list makes one input each).
  function setValue(id, value) {
    inputsOf(id).forEach(function (el) {
      el.remove();
    });
    const list = Array.isArray(value);
    const name = 'property_' + id.toLowerCase() + (list ? '[]' : '');
    (list ? value : [value]).forEach(function (item) {
      const input = document.createElement('input');
      input.type = 'hidden';
      input.name = name;
      input.value = item === null || item === undefined ? '' : String(item);
      form.appendChild(input);
    });
  }

  // What Save sends: every registered property's value(s) from its inputs.
  function values() {
    const out = {};
    config.properties.forEach(function (id) {
      const inputs = inputsOf(id);
      if (inputs.length === 0) {
        return;
      }
      const several = inputs.some(function (el) {
        return el.name.endsWith('[]');
      });
      const texts = inputs.map(function (el) {
        return el.value;
      });
      out[id] = several ? texts : texts[0];
    });
    return out;
  }

  function showErrors(list) {
    errors.replaceChildren();
    list.forEach(function (e) {
      const item = document.createElement('li');
      item.textContent = e.code + ' ' + e.parameter + ': ' + e.message;
      errors.appendChild(item);
    });
  }

  function save() {
    status.textContent = 'Saving…';
    fetch(config.save, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ properties: values() })
    })
      .then(function (resp) {
        return resp.json().then(function (body) {
          if (resp.ok) {
            showErrors([]);
            status.textContent = 'Saved';
          } else if (Array.isArray(body)) {
            showErrors(body);
            status.textContent = 'Not saved';
          } else {
            showErrors([]);
            status.textContent = 'Not saved: ' + (body.error || resp.status);
          }
        });
      })
      .catch(function (e) {
        status.textContent = 'Not saved: ' + e;
      });
  }

  form.addEventListener('submit', function (event) {
    event.preventDefault();
    save();
  });
  document.getElementById('save').addEventListener('click', save);
  // Cancel drops what was not saved: the dialog opens again as stored.
  document.getElementById('cancel').addEventListener('click', function () {
    window.location.reload();
  });

  const placement = config.placement;
  if (!placement) {
    return;
  }
  const frame = document.getElementById('placement-frame');

  function reply(callback, result) {
    frame.contentWindow.postMessage(callback + ':' + JSON.stringify(result), placement.origin);
  }

  const commands = {
    getInitData: function (params, callback) {
      reply(callback, placement.init);
    },
    getInterface: function (params, callback) {
      reply(callback, { command: ['setPropertyValue'], event: [] });
    },
    // As the portal's dialog does: only registered IDs, exactly as registered; no answer.
    setPropertyValue: function (params) {
      Object.keys(params || {}).forEach(function (id) {
        if (registered.has(id)) {
          setValue(id, params[id]);
        }
      });
    },
    resizeWindow: function (params, callback) {
      const height = parseInt(params && params.height, 10) || 0;
      frame.style.height = Math.min(2000, Math.max(100, height)) + 'px';
      reply(callback, {});
    },
    refreshAuth: function (params, callback) {
      fetch(config.auth, { method: 'POST' })
        .then(function (resp) {
          return resp.json();
        })
        .then(function (auth) {
          reply(callback, auth);
        });
    }
    // setTitle, setScroll and reloadWindow are denied in this placement; anything else is
    // unknown: neither has an effect or an answer.
  };

  window.addEventListener('message', function (event) {
    if (event.origin !== placement.origin || event.source !== frame.contentWindow) {
      return;
    }
    if (typeof event.data !== 'string') {
      return;
    }
    const parts = event.data.split(':');
    if (parts.length < 3 || parts[parts.length - 1] !== placement.sid) {
      return;
    }
    const command = parts[0];
    const callback = parts[parts.length - 2];
    const raw = parts.slice(1, -2).join(':');
    let params = {};
    if (raw !== '') {
      try {
        params = JSON.parse(raw);
      } catch (e) {
        return;
      }
    }
    if (Object.prototype.hasOwnProperty.call(commands, command)) {
      commands[command](params, callback);
    }
  });

  // Properties the app never touches keep their values.
  const current = placement.init.PLACEMENT_OPTIONS.current_values;
  Object.keys(current).forEach(function (id) {
    setValue(id, current[id]);
  });
  document.getElementById('placement-form').submit();
})();
