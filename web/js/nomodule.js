/** For browsers too old to run ES modules: show the "browser not supported" view. Plain ES5 on purpose. */
(function () {
  'use strict';
  var lang = /[?&]lang=en(&|$)/.test(location.search) ? 'en' : 'da';
  var request = new XMLHttpRequest();
  request.open('GET', '/static/i18n/' + lang + '.json');
  request.onload = function () {
    /** @type {Record<string, string>} */
    var catalogue;
    try {
      catalogue = JSON.parse(request.responseText);
    } catch (e) {
      return;
    }
    document.documentElement.setAttribute('lang', lang);
    var nodes = document.querySelectorAll('[data-i18n]');
    for (var i = 0; i < nodes.length; i++) {
      var key = nodes[i].getAttribute('data-i18n') || '';
      if (catalogue[key]) nodes[i].textContent = catalogue[key];
    }
    var views = document.querySelectorAll('.view');
    for (var j = 0; j < views.length; j++) {
      /** @type {HTMLElement} */ (views[j]).hidden = views[j].id !== 'view-unsupported';
    }
    var toggle = document.getElementById('lang');
    if (toggle) toggle.hidden = true; // switching needs the modern page code
    document.body.setAttribute('data-state', 'unsupported');
  };
  request.send();
})();
