#include "kv/deferred_kv.hpp"

#include <mutex>
#include <shared_mutex>
#include <utility>
#include <vector>

namespace larder::kv {

namespace {

// A batch made while there is no store yet; replayed into the store's own batch on write.
class PendingBatch final : public Batch {
 public:
  void put(Cf cf, std::string_view key, std::string_view value) override {
    ops_.push_back({Write::put, cf, std::string(key), std::string(value)});
  }
  void del(Cf cf, std::string_view key) override {
    ops_.push_back({Write::del, cf, std::string(key), {}});
  }
  void delete_range(Cf cf, std::string_view begin, std::string_view end) override {
    ops_.push_back({Write::range, cf, std::string(begin), std::string(end)});
  }
  void or_byte(Cf cf, std::string_view key, std::uint32_t offset, std::uint8_t bits) override {
    ops_.push_back({Write::or_byte, cf, std::string(key), or_byte_operand(offset, bits)});
  }
  std::size_t count() const override { return ops_.size(); }
  void replay(Batch& into) const {
    for (const auto& op : ops_) {
      switch (op.kind) {
        case Write::put:
          into.put(op.cf, op.a, op.b);
          break;
        case Write::del:
          into.del(op.cf, op.a);
          break;
        case Write::range:
          into.delete_range(op.cf, op.a, op.b);
          break;
        case Write::or_byte: {
          std::uint32_t offset = 0;
          std::uint8_t bits = 0;
          if (decode_or_byte(op.b, &offset, &bits)) into.or_byte(op.cf, op.a, offset, bits);
          break;
        }
      }
    }
  }

 private:
  struct Write {
    enum Kind : std::uint8_t { put, del, range, or_byte } kind;
    Cf cf;
    std::string a, b;
  };
  std::vector<Write> ops_;
};

class DeferredKv final : public Kv {
 public:
  DeferredKv(StoreOpener open, Status why) : open_(std::move(open)), why_(std::move(why)) {
    if (why_.ok() || why_.not_found()) why_ = {Code::io_error, "the store is not open"};
  }

  Status get(Cf cf, std::string_view key, std::string* value) override {
    std::shared_lock lock(mu_);
    return inner_ ? inner_->get(cf, key, value) : why_;
  }
  Status get_view(Cf cf, std::string_view key,
                  absl::FunctionRef<void(std::string_view)> fn) override {
    std::shared_lock lock(mu_);
    return inner_ ? inner_->get_view(cf, key, fn) : why_;
  }
  Status scan(Cf cf, std::string_view begin, std::string_view end, const ScanFn& fn) override {
    std::shared_lock lock(mu_);
    return inner_ ? inner_->scan(cf, begin, end, fn) : why_;
  }
  std::unique_ptr<Batch> new_batch() override {
    std::shared_lock lock(mu_);
    if (inner_) return inner_->new_batch();
    return std::make_unique<PendingBatch>();
  }
  Status write(Batch& batch) override {
    std::shared_lock lock(mu_);
    if (!inner_) return why_;
    if (auto* pending = dynamic_cast<PendingBatch*>(&batch)) {
      auto real = inner_->new_batch();
      pending->replay(*real);
      return inner_->write(*real);
    }
    return inner_->write(batch);
  }
  Status flush() override {
    std::shared_lock lock(mu_);
    return inner_ ? inner_->flush() : why_;
  }
  Status compact(Cf cf) override {
    std::shared_lock lock(mu_);
    return inner_ ? inner_->compact(cf) : why_;
  }
  Status reset(Cf cf) override {
    std::shared_lock lock(mu_);
    return inner_ ? inner_->reset(cf) : why_;
  }
  Status recover(bool* reopened) override {
    {
      std::shared_lock lock(mu_);
      if (inner_) return inner_->recover(reopened);
    }
    *reopened = false;
    std::unique_ptr<Kv> store;
    Status s = open_(&store);
    if (!s.ok() || !store) {
      if (s.ok() || s.not_found()) s = {Code::io_error, "the store could not be opened"};
      std::unique_lock lock(mu_);
      why_ = s;
      return s;
    }
    std::unique_lock lock(mu_);
    inner_ = std::move(store);
    *reopened = true;  // the engine loads its counters from the store now
    return Status();
  }

 private:
  StoreOpener open_;
  std::shared_mutex mu_;
  std::unique_ptr<Kv> inner_;  // set once, by recover(); never replaced
  Status why_;
};

}  // namespace

std::unique_ptr<Kv> make_deferred_kv(StoreOpener open, Status why) {
  return std::make_unique<DeferredKv>(std::move(open), std::move(why));
}

}  // namespace larder::kv
