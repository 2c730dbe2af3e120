// A Node.js client of smcs.v1.RouterService written as a team using @grpc/grpc-js and @grpc/proto-loader
// writes one: the .proto loaded as it is, no generated code. tests/test_node_client.py runs it:
//   SMCS_NODE_MODULES=.ci/node/node_modules node tests/node_client.js TARGET PROTO_ROOT EMBEDDING_JSON
// and reads what it prints: one JSON object with the ServerInfo response, a Route response and a refusal.
'use strict';
const path = require('path');
const modules = process.env.SMCS_NODE_MODULES;
const grpc = require(path.join(modules, '@grpc', 'grpc-js'));
const loader = require(path.join(modules, '@grpc', 'proto-loader'));

const [target, protoRoot, embeddingJson] = process.argv.slice(2);
const definition = loader.loadSync('smcs/v1/router.proto', {
  includeDirs: [protoRoot], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
});
const smcs = grpc.loadPackageDefinition(definition).smcs.v1;
const client = new smcs.RouterService(target, grpc.credentials.createInsecure());

function call(method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: Date.now() + 10000 }, (error, response) => (error ? reject(error) : resolve(response)));
  });
}

(async () => {
  const info = await call('ServerInfo', {});
  const routed = await call('Route', {
    embedding: { values: JSON.parse(embeddingJson) },
    seed: '18446744073709551615', // 2^64 - 1: a JavaScript number cannot hold it, a string can
    include_support: true,
    policy: { k: 3, retrieval: 'RETRIEVAL_EXACT', scorer: 'SCORER_VOTE' },
  });
  let refused = null;
  try {
    await call('Route', { embedding: { values: [1, 2] } });
  } catch (error) {
    refused = { code: error.code, details: error.details };
  }
  console.log(JSON.stringify({ info, routed, refused }));
  client.close();
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
