// The settings form's behaviour inside the BP designer's frame (docs/settings-form.md):
// - checks each field as the host checks a call's properties (crates/host/src/values.rs; the
//   browser test compares both on the same values), in the portal's language;
// - sends every change to the designer with the frame command `setPropertyValue`, in the
//   message format of Bitrix24's JavaScript client (docs/protocol.md §1.8):
//   `command:params-json:callback-key:APP_SID`, posted to the portal's origin only;
// - inserts expressions (`{=Document:TITLE}`, `{=Variable:X}`, …) from each field's menu.
// The designer keeps what it was last sent and stores it on its own Save.
(function () {
  'use strict';

  var form = document.getElementById('settings');
  if (!form) {
    return;
  }
  var origin = form.getAttribute('data-origin');
  var sid = form.getAttribute('data-sid');
  var data = JSON.parse(form.getAttribute('data-form'));
  var problems = data.problems;
  var fieldsById = {};
  data.fields.forEach(function (field) { fieldsById[field.id] = field; });

  // ---- The frame protocol (the child's side) ----
  var sent = 0;

  function send(command, params) {
    sent += 1;
    var key = 'b24act' + Date.now().toString(36) + sent;
    var parts = [params ? JSON.stringify(params) : '', key, sid].filter(Boolean);
    window.parent.postMessage(command + ':' + parts.join(':'), origin);
  }

  function resize() {
    send('resizeWindow', { width: '100%', height: document.documentElement.scrollHeight + 20 });
  }

  // ---- The checks: the rules of values.rs ----
  var EXPRESSION = /\{=[^}]*\}/;

  function digits(text) {
    return /^[0-9]+$/.test(text);
  }

  function validDate(year, month, day) {
    var leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
    var days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1];
    return year >= 1 && days !== undefined && day >= 1 && day <= days;
  }

  // DD.MM.YYYY, MM/DD/YYYY or DD/MM/YYYY (either reading), YYYY-MM-DD.
  function isDate(s) {
    if (s.length !== 10) {
      return false;
    }
    var n = function (from, to) {
      var part = s.slice(from, to);
      return digits(part) ? parseInt(part, 10) : NaN;
    };
    if ((s[2] === '.' && s[5] === '.') || (s[2] === '/' && s[5] === '/')) {
      var first = n(0, 2);
      var second = n(3, 5);
      var year = n(6, 10);
      if (isNaN(first) || isNaN(second) || isNaN(year)) {
        return false;
      }
      return s[2] === '.'
        ? validDate(year, second, first)
        : validDate(year, first, second) || validDate(year, second, first);
    }
    if (s[4] === '-' && s[7] === '-') {
      var y = n(0, 4);
      var m = n(5, 7);
      var d = n(8, 10);
      return !isNaN(y) && !isNaN(m) && !isNaN(d) && validDate(y, m, d);
    }
    return false;
  }

  // HH:MM or HH:MM:SS within a day; returns [hours, minutes, seconds or null] or null.
  function clockParts(clock) {
    var two = function (piece, limit) {
      return piece.length === 2 && digits(piece) && parseInt(piece, 10) <= limit
        ? parseInt(piece, 10) : null;
    };
    var pieces = clock.split(':');
    if (pieces.length !== 2 && pieces.length !== 3) {
      return null;
    }
    var hours = two(pieces[0], 23);
    var minutes = two(pieces[1], 59);
    var seconds = pieces.length === 3 ? two(pieces[2], 59) : null;
    if (hours === null || minutes === null || (pieces.length === 3 && seconds === null)) {
      return null;
    }
    return [hours, minutes, seconds];
  }

  function isSiteTime(time) {
    var at = time.lastIndexOf(' ');
    var clock = time;
    var twelve = false;
    if (at >= 0) {
      var half = time.slice(at + 1).toLowerCase();
      if (half !== 'am' && half !== 'pm') {
        return false;
      }
      clock = time.slice(0, at);
      twelve = true;
    }
    var parts = clockParts(clock);
    return parts !== null && (!twelve || (parts[0] >= 1 && parts[0] <= 12));
  }

  function isIsoTime(time) {
    var at = time.search(/[Z+-]/);
    var clock = at >= 0 ? time.slice(0, at) : time;
    var zone = at >= 0 ? time.slice(at) : '';
    var dot = clock.indexOf('.');
    if (dot >= 0) {
      var fraction = clock.slice(dot + 1);
      if (!digits(fraction)) {
        return false;
      }
      clock = clock.slice(0, dot);
    }
    var zoneOk = zone === '' || zone === 'Z';
    if (!zoneOk && (zone[0] === '+' || zone[0] === '-')) {
      var offset = clockParts(zone.slice(1));
      zoneOk = offset !== null && offset[2] === null;
    }
    return zoneOk && clockParts(clock) !== null;
  }

  function isDatetime(s) {
    var t = s.indexOf('T');
    if (t >= 0) {
      var date = s.slice(0, t);
      return isDate(date) && date[4] === '-' && isIsoTime(s.slice(t + 1));
    }
    var space = s.indexOf(' ');
    return space < 0 ? isDate(s) : isDate(s.slice(0, space)) && isSiteTime(s.slice(space + 1));
  }

  function isUser(s) {
    if (s === 'author') {
      return true;
    }
    if (s.indexOf('user_') === 0) {
      return digits(s.slice(5));
    }
    if (s.indexOf('group_') === 0) {
      return /^[A-Za-z0-9_]+$/.test(s.slice(6));
    }
    return digits(s);
  }

  function isFile(s) {
    if (digits(s)) {
      return true;
    }
    try {
      var url = new URL(s);
      return url.protocol === 'http:' || url.protocol === 'https:';
    } catch (e) {
      return false;
    }
  }

  var INTEGER_MIN = BigInt('-9223372036854775808');
  var INTEGER_MAX = BigInt('9223372036854775807');

  // What is wrong with one non-empty value of a field, or null.
  function problemOf(field, value) {
    if (EXPRESSION.test(value)) {
      return null; // Resolved when the workflow runs; the host checks the result then.
    }
    var trimmed = value.trim();
    switch (field.type) {
      case 'int':
        if (!/^[+-]?[0-9]+$/.test(trimmed)) {
          return 'int';
        }
        var big = BigInt(trimmed.replace(/^\+/, ''));
        return big < INTEGER_MIN || big > INTEGER_MAX ? 'int' : null;
      case 'double':
        return /^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$/.test(trimmed)
          && isFinite(parseFloat(trimmed)) ? null : 'double';
      case 'bool':
        return ['Y', 'N', '1', '0'].indexOf(value) >= 0 ? null : 'bool';
      case 'select':
        return field.options.length === 0 || field.options.indexOf(value) >= 0 ? null : 'select';
      case 'date':
        return isDate(value) ? null : 'date';
      case 'datetime':
        return isDatetime(value) ? null : 'datetime';
      case 'user':
        return isUser(value) ? null : 'user';
      case 'file':
        return isFile(value) ? null : 'file';
      default:
        return null;
    }
  }

  // ---- The fields ----
  function controls(fieldset) {
    return Array.prototype.slice.call(
      fieldset.querySelectorAll('.values input, .values textarea, .values select'));
  }

  function valuesOf(fieldset) {
    return controls(fieldset).map(function (control) { return control.value; })
      .filter(function (value) { return value !== ''; });
  }

  // Shows the field's first problem (or none); returns whether it has none.
  function check(fieldset) {
    var field = fieldsById[fieldset.getAttribute('data-id')];
    var values = valuesOf(fieldset);
    var problem = null;
    var shown = '';
    if (values.length === 0 && field.required) {
      problem = 'required';
    }
    values.some(function (value) {
      var found = problemOf(field, value);
      if (found) {
        problem = found;
        shown = value.length > 64 ? value.slice(0, 64) + '…' : value;
      }
      return found !== null;
    });
    var line = fieldset.querySelector('.problem');
    line.textContent = problem ? problems[problem].replace('{value}', shown) : '';
    line.hidden = !problem;
    fieldset.classList.toggle('invalid', Boolean(problem));
    return !problem;
  }

  // Sends the field's value(s) to the designer: a list for a multiple property, else one
  // string (empty when unset). Sent even when a check fails: the designer's Save then refuses
  // it too, instead of storing an older value than the one on screen.
  function sendField(fieldset) {
    var field = fieldsById[fieldset.getAttribute('data-id')];
    var values = valuesOf(fieldset);
    var params = {};
    params[field.id] = field.multiple ? values : (values[0] || '');
    send('setPropertyValue', params);
  }

  function changed(fieldset) {
    check(fieldset);
    sendField(fieldset);
  }

  // Puts `expression` into the field's last focused control: at the cursor of a text control,
  // as the chosen option of a list (added when it is not one).
  function insert(fieldset, expression) {
    var target = fieldset.lastFocused || controls(fieldset)[0];
    if (target.tagName === 'SELECT') {
      var option = Array.prototype.find.call(target.options, function (o) {
        return o.value === expression;
      });
      if (!option) {
        option = new Option(expression, expression);
        target.add(option);
      }
      target.value = expression;
    } else {
      var start = target.selectionStart === null ? target.value.length : target.selectionStart;
      var end = target.selectionEnd === null ? start : target.selectionEnd;
      target.value = target.value.slice(0, start) + expression + target.value.slice(end);
      target.selectionStart = target.selectionEnd = start + expression.length;
    }
    target.focus();
  }

  function addValue(fieldset) {
    var rows = fieldset.querySelectorAll('.values .value');
    var copy = rows[rows.length - 1].cloneNode(true);
    var control = copy.querySelector('input, textarea, select');
    control.value = '';
    fieldset.querySelector('.values').appendChild(copy);
    control.focus();
    resize();
  }

  // The expression menu is in the page once; each field gets a copy, labelled with its name.
  var menu = document.getElementById('insert-menu');

  function addMenu(fieldset) {
    if (!menu) {
      return;
    }
    var copy = menu.content.firstElementChild.cloneNode(true);
    var legend = fieldset.querySelector('legend');
    copy.setAttribute('aria-label', copy.options[0].text + ': ' + legend.firstChild.textContent);
    fieldset.querySelector('.tools').appendChild(copy);
  }

  Array.prototype.forEach.call(form.querySelectorAll('fieldset.field'), function (fieldset) {
    var field = fieldsById[fieldset.getAttribute('data-id')];
    addMenu(fieldset);
    fieldset.addEventListener('focusin', function (event) {
      if (event.target.closest('.values')) {
        fieldset.lastFocused = event.target;
      }
    });
    fieldset.addEventListener('change', function (event) {
      if (event.target.classList.contains('insert')) {
        if (event.target.value) {
          insert(fieldset, event.target.value);
          event.target.value = '';
          changed(fieldset);
        }
      } else {
        changed(fieldset);
      }
    });
    // Every keystroke is sent, so the designer's Save, a click away, has what is on screen.
    fieldset.addEventListener('input', function (event) {
      if (event.target.closest('.values')) {
        changed(fieldset);
      }
    });
    var add = fieldset.querySelector('button.add');
    if (add) {
      add.addEventListener('click', function () { addValue(fieldset); });
    }
    if (field.send_on_load) {
      sendField(fieldset); // A default the designer does not hold yet.
    }
  });
  form.addEventListener('submit', function (event) { event.preventDefault(); });
  resize();
}());
