/**
 * Self-signed certificate for loopback TLS tests (valid for public.test, localhost, 127.0.0.1, ::1
 * until 2126). Generated with:
 *   openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 36500 \
 *     -subj "/CN=public.test" -addext "subjectAltName=DNS:public.test,DNS:localhost,IP:127.0.0.1,IP:::1"
 * Test-only key: it protects nothing.
 */
export const TEST_CERT = `-----BEGIN CERTIFICATE-----
MIIBvzCCAWagAwIBAgIUBRv5TuaWbhvJ6PWaXG43CwI811cwCgYIKoZIzj0EAwIw
FjEUMBIGA1UEAwwLcHVibGljLnRlc3QwIBcNMjYxMTI2MTIxNzM5WhgPMjEyNjEx
MDIxMjE3MzlaMBYxFDASBgNVBAMMC3B1YmxpYy50ZXN0MFkwEwYHKoZIzj0CAQYI
KoZIzj0DAQcDQgAEBJGBtXMIfqOi6unOw6o9oGNrGio+TBRWCWz4UNDlbXLy3ijM
orOOXZKSERvkljEWO9J8xNdRhUrrH2bP6WlUa6OBjzCBjDAdBgNVHQ4EFgQUPDHG
roAAG8lcNYJ86e2219zGcHMwHwYDVR0jBBgwFoAUPDHGroAAG8lcNYJ86e2219zG
cHMwDwYDVR0TAQH/BAUwAwEB/zA5BgNVHREEMjAwggtwdWJsaWMudGVzdIIJbG9j
YWxob3N0hwR/AAABhxAAAAAAAAAAAAAAAAAAAAABMAoGCCqGSM49BAMCA0cAMEQC
IHQunvhSDQhu8IpwcQIM5kuL9xii0LCpmq/YMiwMY12SAiAufaKsazc6ti4SAVuO
kClRixhHW1C5J7/AKpfAJZV8+g==
-----END CERTIFICATE-----
`;

export const TEST_KEY = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgbO79t/HrWV5CbOtR
ypfU82aRK3+mfZuBnH/VI7/BEiGhRANCAAQEkYG1cwh+o6Lq6c7Dqj2gY2saKj5M
FFYJbPhQ0OVtcvLeKMyis45dkpIRG+SWMRY70nzE11GFSusfZs/paVRr
-----END PRIVATE KEY-----
`;
