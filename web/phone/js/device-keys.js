// This phone's device keys (docs/protocol.md "Keys"): one X25519 key pair per machine,
// the phone's identity there, made the first time it speaks version 2 to that machine
// (right after pairing). Kept as CryptoKey objects in IndexedDB, which stores them by
// structured clone: the private key stays non-extractable, so no script (this page's
// included) can ever read it out. Never in localStorage, which holds only strings.
//
// The storage is a parameter, so the node tests use an in-memory one.

import { generateDeviceKey } from "./noise.js";

const DATABASE = "chroxy";
const STORE = "deviceKeys";

/// The device keys over `store` (`get(url)`, `add(url, keyPair)` resolving to false when
/// `url` already has one, `delete(url)`; IndexedDB's by default).
export function keyStore(store = indexedDbStore()) {
  return {
    /// The key pair this phone uses with the machine at `url`, made on first use.
    async deviceKey(url) {
      const kept = await store.get(url);
      if (kept) return kept;
      const made = await generateDeviceKey();
      if (await store.add(url, made)) return made;
      // Another tab (or connection) made one meanwhile: all of them use that one.
      return store.get(url);
    },
    /// Forgets the key for `url` (the machine was forgotten): a new pairing makes another.
    forget(url) {
      return store.delete(url);
    },
  };
}

function requested(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

/// The key pairs in this origin's IndexedDB, keyed by machine URL.
export function indexedDbStore() {
  let opened = null;
  const database = () => {
    opened ??= new Promise((resolve, reject) => {
      const request = indexedDB.open(DATABASE, 1);
      request.onupgradeneeded = () => request.result.createObjectStore(STORE);
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
    // A failure is not remembered: the next connection tries again.
    opened.catch(() => (opened = null));
    return opened;
  };
  const store = async (mode) => (await database()).transaction(STORE, mode).objectStore(STORE);
  return {
    async get(url) {
      return requested((await store("readonly")).get(url));
    },
    async add(url, keyPair) {
      const request = (await store("readwrite")).add(keyPair, url);
      return new Promise((resolve, reject) => {
        request.onsuccess = () => resolve(true);
        request.onerror = (e) => {
          if (request.error?.name !== "ConstraintError") return reject(request.error);
          e.preventDefault(); // not an abort of the transaction: the key is simply there
          resolve(false);
        };
      });
    },
    async delete(url) {
      await requested((await store("readwrite")).delete(url));
    },
  };
}
