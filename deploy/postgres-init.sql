-- One database per service; each service owns its own and never reads another's.
CREATE DATABASE referrals OWNER fama;
CREATE DATABASE notifications OWNER fama;
