// The JSON Schemas in schemas/json are contracts: the example bodies must
// satisfy them, and bodies the consumer dead-letters must not.
#include <doctest/doctest.h>

#include <rapidjson/document.h>
#include <rapidjson/schema.h>

#include <map>
#include <memory>
#include <string_view>

#include "support/support.hpp"

namespace t = clerk_sync::test;

namespace {

rapidjson::Document parse(const std::string& text) {
  rapidjson::Document d;
  d.Parse(text.c_str());
  REQUIRE_FALSE(d.HasParseError());
  return d;
}

// Resolves "clerk-user-event.schema.json" and friends from schemas/json.
class schema_files : public rapidjson::IRemoteSchemaDocumentProvider {
 public:
  const rapidjson::SchemaDocument* GetRemoteDocument(const char* uri, rapidjson::SizeType length) override {
    // RapidJSON 1.1.0 passes a $ref's document name one character short:
    // take the schema file whose name starts with what we were given.
    std::string name(uri, length);
    for (const char* file : {"clerk-user-event.schema.json", "clerk-session-event.schema.json", "kafka-message.schema.json"})
      if (std::string_view(file).starts_with(name)) name = file;
    auto& slot = docs_[name];
    if (!slot) {
      documents_.push_back(std::make_unique<rapidjson::Document>(parse(t::read_file(t::source_path("schemas/json/" + name)))));
      slot = std::make_unique<rapidjson::SchemaDocument>(*documents_.back(), this);
    }
    return slot.get();
  }

 private:
  std::vector<std::unique_ptr<rapidjson::Document>> documents_;
  std::map<std::string, std::unique_ptr<rapidjson::SchemaDocument>> docs_;
};

bool valid(const rapidjson::SchemaDocument& schema, const std::string& body) {
  rapidjson::SchemaValidator v(schema);
  const auto doc = parse(body);
  return doc.Accept(v);
}

}  // namespace

TEST_CASE("every example body satisfies its JSON Schema, and broken bodies do not") {
  schema_files files;
  const auto* user = files.GetRemoteDocument("clerk-user-event.schema.json", 28);
  const auto* session = files.GetRemoteDocument("clerk-session-event.schema.json", 31);
  REQUIRE(user != nullptr);
  REQUIRE(session != nullptr);
  for (const char* f : {"user.created.json", "user.updated.json", "user.deleted.json", "docs_user_created.json",
                        "real_user_created.json"})
    CHECK_MESSAGE(valid(*user, t::read_file(t::source_path(std::string("tests/fixtures/clerk/") + f))), f);
  for (const char* f : {"session.created.json", "session.pending.json", "session.ended.json", "session.removed.json",
                        "session.revoked.json"})
    CHECK_MESSAGE(valid(*session, t::read_file(t::source_path(std::string("tests/fixtures/clerk/") + f))), f);

  CHECK(valid(*user, R"({"type":"user.updated","data":{"id":"u","updated_at":1,
      "public_metadata":{"g2a_balance":"12.50","points_balance":"7","role":"vip"}}})"));
  CHECK_FALSE(valid(*user, R"({"type":"user.updated","data":{"id":"u","public_metadata":{}}})"));  // no updated_at
  CHECK_FALSE(valid(*user, R"({"type":"user.updated","data":{"id":"u","updated_at":1}})"));  // no public_metadata
  CHECK_FALSE(valid(*user, R"({"type":"user.updated","data":{"id":"u","updated_at":1,"public_metadata":null}})"));
  CHECK(valid(*user, R"({"type":"user.updated","data":{"id":"u","updated_at":1,"public_metadata":{},
      "private_metadata":null}})"));
  CHECK_FALSE(valid(*user, R"({"type":"user.deleted","timestamp":1,"data":{"deleted":true}})"));  // no id
  CHECK_FALSE(valid(*user, R"({"type":"user.updated","data":{"id":"u","updated_at":1,
      "public_metadata":{"g2a_balance":"lots"}}})"));
  CHECK_FALSE(valid(*session, R"({"type":"session.ended","data":{"id":"s","updated_at":1}})"));  // no user_id
  CHECK_FALSE(valid(*session, R"({"type":"session.ended","data":{"id":"s","user_id":"u","updated_at":1,
      "user":{"id":"u"}}})"));  // embedded user without updated_at

  const auto* message = files.GetRemoteDocument("kafka-message.schema.json", 25);
  CHECK(valid(*message, R"({"topic":"clerk.events","key":"user_1","value":"{}","headers":{"svix-id":"msg_1",
      "svix-timestamp":"1716883200","clerk-event-type":"user.created","received-at":"1716883200123"}})"));
  CHECK_FALSE(valid(*message, R"({"topic":"clerk.events","key":"user_1","value":"{}","headers":{}})"));
}
