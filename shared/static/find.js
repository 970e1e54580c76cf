// "Use my location" on Find a meeting. The place goes into the search as "latitude,longitude"
// rounded to 2 decimals (about 1 km): enough to find meetings nearby, not to find a home.
(function () {
  "use strict";
  var button = document.getElementById("use-location");
  var near = document.getElementById("near");
  var status = document.getElementById("location-status");
  if (!button || !near || !("geolocation" in navigator)) {
    return;
  }
  button.hidden = false;
  button.addEventListener("click", function () {
    status.textContent = "Finding where you are\u2026";
    navigator.geolocation.getCurrentPosition(function (position) {
      near.value = position.coords.latitude.toFixed(2) + "," + position.coords.longitude.toFixed(2);
      status.textContent = "";
      near.form.submit();
    }, function () {
      status.textContent = "Your location is not available. Enter a postcode or town instead.";
    }, {enableHighAccuracy: false, timeout: 10000, maximumAge: 600000});
  });
}());
